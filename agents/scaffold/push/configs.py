"""Push notification configs in Redis: one hash per task, scoped by owner, shared by replicas."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks.push_notification_config_store import (
    PushNotificationConfigStore,
    normalize_push_notification_config,
)
from a2a.server.tasks.push_notification_sender import PushNotificationEvent
from a2a.types import Task, TaskPushNotificationConfig, TaskState, TaskStatusUpdateEvent
from a2a.utils.errors import InvalidParamsError
from redis.exceptions import RedisError

from agents.scaffold.tasks.records import ANONYMOUS
from protocol.streams import TERMINAL_STATES
from registry.keys import RedisKeys
from registry.redis_client import Script, listen, text

#: How long the configs read for dispatching a task's updates are reused.
DISPATCH_CACHE_S = 1.0
#: Most task ids remembered as created here (beyond that, lookups go to Redis).
MAX_TRACKED = 100_000
_SET = Script(
    "push_config_set",
    """
    if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
        and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
      return 0
    end
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return 1
    """,
)
log = logging.getLogger(__name__)
log = logging.getLogger(__name__)


class RedisPushConfigStore(PushNotificationConfigStore):
    """Push notification configs of one agent's tasks (shared by its replicas), by owner.

    One hash per task; a field is the JSON ``[owner, config id]``, its value the config as
    protobuf bytes. The hash expires ``retention_s`` after the last write or dispatch read.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        agent: str,
        *,
        keys: RedisKeys | None = None,
        retention_s: float = 7 * 24 * 3600,
        max_per_task: int = 10,
        owner_resolver: OwnerResolver = resolve_user_scope,
    ) -> None:
        self._redis = redis
        self._agent = agent
        self._keys = keys or RedisKeys()
        self._retention_ms = int(retention_s * 1000)
        self._max_per_task = max_per_task
        self._owner_resolver = owner_resolver
        self._recent: dict[str, tuple[float, list[TaskPushNotificationConfig]]] = {}
        # Tasks created here, and those of them known to have configs: the others of the
        # first kind have none, so their updates cost no Redis read.
        self._born_here: set[str] = set()
        self._configured: set[str] = set()
        self._channel = self._keys.push_announcements(agent)

    def _owner(self, context: ServerCallContext) -> str:
        return self._owner_resolver(context) or ANONYMOUS

    def _key(self, task_id: str) -> str:
        return self._keys.push_configs(self._agent, task_id)

    async def set_info(
        self,
        task_id: str,
        notification_config: TaskPushNotificationConfig,
        context: ServerCallContext,
    ) -> TaskPushNotificationConfig:
        """Create or replace (same id) a config of the caller; at most ``max_per_task``."""
        stored = normalize_push_notification_config(task_id, notification_config)
        self._recent.pop(task_id, None)
        self._configured.add(task_id)
        field_name = _field(self._owner(context), stored.id)
        args = (field_name, stored.SerializeToString(), self._max_per_task, self._retention_ms)
        if not await _SET.run(self._redis, (self._key(task_id),), args):
            raise InvalidParamsError(
                message=f"task {task_id} already has {self._max_per_task} push notification "
                "configs; delete one (DeleteTaskPushNotificationConfig) or reuse its id"
            )
        await self.announce(task_id)
        return stored

    async def get_info(
        self, task_id: str, context: ServerCallContext
    ) -> list[TaskPushNotificationConfig]:
        """The caller's configs of a task, by id."""
        owner = self._owner(context)
        raw = await self._redis.hgetall(self._key(task_id))
        return _configs(v for name, v in raw.items() if _parse_field(name)[0] == owner)

    def note_update(self, task_id: str, event: PushNotificationEvent) -> bool:
        """Record what an update says about its task; False when it cannot have a webhook.

        A task whose first update here is its creation was born here: it has configs only
        if one was set here or announced by another replica (:meth:`follow_announcements`).
        A task seen first mid-way (continued here after input) is looked up in Redis.
        """
        if isinstance(event, Task) and event.status.state == TaskState.TASK_STATE_SUBMITTED:
            if len(self._born_here) > MAX_TRACKED:
                self._born_here.clear()  # forgetting only costs Redis reads
            self._born_here.add(task_id)
        possible = task_id in self._configured or task_id not in self._born_here
        state = _state(event)
        if state in TERMINAL_STATES:
            self._born_here.discard(task_id)
            self._configured.discard(task_id)
        return possible

    def known_configured(self, task_id: str) -> bool:
        """Whether this replica knows ``task_id`` has a push config (set or announced)."""
        return task_id in self._configured

    async def announce(self, task_id: str) -> None:
        """Tell the other replicas that ``task_id`` now has a push config."""
        try:
            await self._redis.publish(self._channel, task_id)
        except (RedisError, OSError) as exc:
            log.warning("push config not announced: %s", exc, extra={"task_id": task_id})

    async def follow_announcements(self) -> None:
        """Run until cancelled: note the tasks other replicas gave push configs."""
        await listen(self._redis, self._channel, self._note_announced)

    async def _note_announced(self, message: bytes) -> None:
        task_id = text(message)
        self._configured.add(task_id)
        self._recent.pop(task_id, None)

    async def get_info_for_dispatch(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """Every owner's configs of a task; keeps them as long as the task keeps changing.

        A streaming task sends many updates a second: what was read is reused for
        ``DISPATCH_CACHE_S`` (a config set on this replica is seen at once, one set on
        another replica within that time).
        """
        now = time.monotonic()
        recent = self._recent.get(task_id)
        if recent is not None and recent[0] > now:
            return recent[1]
        key = self._key(task_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.pexpire(key, self._retention_ms)
            raw, _ = await pipe.execute()
        configs = _configs(raw.values())
        if len(self._recent) > 10_000:
            self._recent = {k: v for k, v in self._recent.items() if v[0] > now}
        self._recent[task_id] = (now + DISPATCH_CACHE_S, configs)
        return configs

    async def delete_info(
        self, task_id: str, context: ServerCallContext, config_id: str | None = None
    ) -> None:
        """Delete one config of the caller, or all of them (``config_id`` None)."""
        owner = self._owner(context)
        key = self._key(task_id)
        self._recent.pop(task_id, None)
        if config_id is not None:
            await self._redis.hdel(key, _field(owner, config_id))
            return
        names = [n for n in await self._redis.hkeys(key) if _parse_field(n)[0] == owner]
        if names:
            await self._redis.hdel(key, *names)


def _field(owner: str, config_id: str) -> str:
    return json.dumps([owner, config_id], separators=(",", ":"))


def _parse_field(name: bytes | str) -> tuple[str, str]:
    owner, config_id = json.loads(text(name))
    return str(owner), str(config_id)


def _raw(value: bytes | str) -> bytes:
    if isinstance(value, str):
        raise TypeError("the Redis client must not decode replies (decode_responses=False)")
    return value


def _configs(values: Iterable[bytes | str]) -> list[TaskPushNotificationConfig]:
    """Configs from hash values (the client must not decode replies: they are protobuf)."""
    configs = [TaskPushNotificationConfig.FromString(_raw(value)) for value in values]
    return sorted(configs, key=lambda config: config.id)


def _state(event: PushNotificationEvent) -> TaskState | None:
    if isinstance(event, Task | TaskStatusUpdateEvent):
        return event.status.state
    return None
