"""A2A push notifications: webhook configs in Redis, ordered at-least-once delivery, a URL policy.

Three pieces plug into the SDK's ``DefaultRequestHandler`` (built by :func:`push_parts`):

* :class:`RedisPushConfigStore` — the configs a client set on a task (CreateTaskPushNotification
  Config, or ``configuration.task_push_notification_config`` of SendMessage), scoped by owner
  like the SDK's stores, one Redis hash per task, expiring with the task, at most N per task.
* :class:`PushSender` — the SDK calls it inline in the task's event consumer, so it only
  queues: per task, then per (task, webhook), each drained in order by a background task. Each
  update is POSTed as the SDK's ``StreamResponse`` JSON with a stable ``X-A2A-Event-Id`` (the
  same on every retry: receivers drop duplicates), retried with exponential backoff and jitter
  on timeouts, transport errors, 408/425/429 and 5xx, until the attempts or the time run out.
* :class:`PushUrlPolicy` — which webhook URLs are allowed: http(s) to public addresses unless
  the operator allows more. Checked when a config is set and again (DNS included) before every
  delivery attempt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks.push_notification_config_store import (
    PushNotificationConfigStore,
    normalize_push_notification_config,
)
from a2a.server.tasks.push_notification_sender import (
    PushNotificationEvent,
    PushNotificationSender,
)
from a2a.types import (
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import InvalidParamsError
from a2a.utils.proto_utils import to_stream_response
from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter
from redis.exceptions import RedisError

from agents.scaffold.settings import AgentSettings
from protocol.streams import TERMINAL_STATES
from registry.keys import RedisKeys
from registry.redisio import Script, listen, text

#: The header the SDK's ``BasePushNotificationSender`` puts the config's token in.
TOKEN_HEADER = "X-A2A-Notification-Token"  # noqa: S105 (a header name)
#: One id per task update, the same on every retry: a receiver drops ids it has seen.
EVENT_ID_HEADER = "X-A2A-Event-Id"
ANONYMOUS = "anonymous"
MAX_URL_CHARS = 2048
MAX_ANSWER_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({408, 425, 429})
DELIVERIES = Counter(
    "scriptorium_agent_push_deliveries_total",
    "Push notification updates by outcome (delivered, gave_up, dropped).",
    ["agent", "outcome"],
)
RETRIES = Counter(
    "scriptorium_agent_push_retries_total", "Push delivery attempts that failed.", ["agent"]
)
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

_EVENT_TYPES: dict[str, type[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]] = {
    "task": Task,
    "status_update": TaskStatusUpdateEvent,
    "artifact_update": TaskArtifactUpdateEvent,
}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


# --- the config store ------------------------------------------------------------------------


#: How long the configs read for dispatching a task's updates are reused.
DISPATCH_CACHE_S = 1.0
#: Most task ids remembered as created here (beyond that, lookups go to Redis).
MAX_TRACKED = 100_000


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
            log.warning("push config not announced: %s", exc, extra=_ids(task_id))

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


# --- the URL policy --------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a webhook URL may not be posted to; ``transient`` if it may pass later (DNS)."""

    reason: str
    transient: bool = False


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the event loop's resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class PushUrlPolicy:
    """Which webhook URLs this agent posts to.

    http(s) only; the host must resolve to public addresses alone (the SDK's
    ``a2a.utils.push_url_validator`` rule: not loopback, private, shared, link-local,
    multicast, reserved or unspecified). ``allow_private`` also admits loopback and private
    addresses (not link-local: cloud metadata lives there). ``allowed_hosts`` names hosts
    (exact, not resolved) and networks (CIDR) admitted whatever they are.

    Called with a URL (the SDK's ``push_url_validator``) it raises ``InvalidParamsError``
    saying why a URL is refused.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Sequence[str] = (),
        resolve: Resolver = resolve_host,
        timeout_s: float = 5.0,
    ) -> None:
        networks: list[Network] = []
        names: set[str] = set()
        for entry in allowed_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        self.allow_private = allow_private
        self.allowed_names = frozenset(names)
        self.allowed_networks = tuple(networks)
        self._resolve = resolve
        self._timeout_s = timeout_s

    async def __call__(self, url: str) -> bool:
        """Accept ``url`` or raise ``InvalidParamsError`` saying why not."""
        refusal = await self.check(url)
        if refusal is not None:
            log.info(
                "push notification URL refused",
                extra={"url": redact_url(url), "reason": refusal.reason},
            )
            raise InvalidParamsError(
                message=f"push notification URL refused: {refusal.reason}. This agent posts "
                "only to http(s) URLs on public addresses unless its operator allows more "
                "(SCRIPTORIUM_PUSH_ALLOWED_HOSTS, SCRIPTORIUM_PUSH_ALLOW_PRIVATE)"
            )
        return True

    async def check(self, url: str) -> Refusal | None:
        """Why ``url`` may not be posted to now, or None when it may (resolves the host)."""
        if len(url) > MAX_URL_CHARS:
            return Refusal(f"it is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return Refusal("it is not a valid URL")
        if parts.scheme not in ("http", "https"):
            return Refusal(f"scheme {parts.scheme!r} is not http or https")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return Refusal("it names no host")
        if host in self.allowed_names:
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                default_port = 443 if parts.scheme == "https" else 80
                addresses = await self._resolve(host, port or default_port)
        except (OSError, TimeoutError):
            return Refusal(f"host {host!r} does not resolve", transient=True)
        if not addresses:
            return Refusal(f"host {host!r} does not resolve", transient=True)
        for address in addresses:
            kind = self._refused_kind(address)
            if kind is not None:
                log.debug("push host refused", extra={"host": host, "address": address})
                return Refusal(f"host {host!r} resolves to a {kind} address")
        return None

    def _refused_kind(self, address: str) -> str | None:
        """What kind of non-public address this is, unless it is allowed."""
        try:
            ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "malformed"
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip = mapped
        if any(ip in network for network in self.allowed_networks):
            return None
        kind = address_kind(ip)
        if kind in ("loopback", "private") and self.allow_private:
            return None
        return kind


def address_kind(ip: Address) -> str | None:
    """``None`` for a public unicast address, else what it is (loopback, private, ...)."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "private"
    return None


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` of a URL: no credentials, query or fragment (for logs)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


# --- the sender ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one update is tried against one webhook."""

    max_attempts: int = 8
    first_delay_s: float = 0.5
    max_delay_s: float = 60.0
    give_up_s: float = 300.0
    timeout_s: float = 10.0

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """Wait after the ``failures``-th failure: doubling, capped, jittered in [d/2, d]."""
        ceiling = min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))
        wait: float = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_delay_s))
        return wait


@dataclass(frozen=True)
class _Update:
    """One task update as it was when it happened (serialized: later changes do not leak)."""

    event_id: str
    kind: str
    raw: bytes


@dataclass(frozen=True)
class _Failure:
    reason: str
    retryable: bool
    retry_after_s: float | None = None


@dataclass
class _Lane:
    """Work waiting for one background task, done in order."""

    items: deque[tuple[_Update, TaskPushNotificationConfig | None]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    dropped: int = 0


class PushSender(PushNotificationSender):
    """Queues each task update for each webhook of the task; delivers in the background.

    ``send_notification`` never waits on the network or Redis: per task a lane looks the
    configs up (one read for every update queued meanwhile), then per (task, config) a lane
    POSTs the updates in order, each until delivered or given up.
    """

    def __init__(
        self,
        store: RedisPushConfigStore,
        policy: PushUrlPolicy,
        http: httpx.AsyncClient,
        *,
        agent: str,
        retry: RetryPolicy | None = None,
        max_queued: int = 1000,
        drain_s: float = 10.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._http = http
        self._agent = agent
        self._retry = retry or RetryPolicy()
        self._max_queued = max_queued
        self._drain_s = drain_s
        self._tasks: dict[str, _Lane] = {}
        self._hooks: dict[tuple[str, str], _Lane] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        """Updates not yet delivered or given up (queued or in flight)."""
        lanes = [*self._tasks.values(), *self._hooks.values()]
        return sum(len(lane.items) + (lane.worker is not None) for lane in lanes)

    async def send_notification(self, task_id: str, event: PushNotificationEvent) -> None:
        """Queue ``event`` for every webhook of ``task_id``; returns at once."""
        if self._closed:
            DELIVERIES.labels(self._agent, "dropped").inc()
            log.warning("push notification dropped: the agent is stopping", extra=_ids(task_id))
            return
        if not self._store.note_update(task_id, event):
            return
        update = _Update(uuid.uuid4().hex, _kind(event), event.SerializeToString())
        lane = self._tasks.setdefault(task_id, _Lane())
        self._enqueue(lane, (update, None), task_id, "")
        if lane.worker is None:
            lane.worker = self._spawn(self._dispatch(task_id, lane))

    def _enqueue(
        self,
        lane: _Lane,
        item: tuple[_Update, TaskPushNotificationConfig | None],
        task_id: str,
        config_id: str,
    ) -> None:
        if len(lane.items) >= self._max_queued:
            lane.items.popleft()
            lane.dropped += 1
            DELIVERIES.labels(self._agent, "dropped").inc()
            if lane.dropped == 1:  # once per lane: a flood must not flood the log too
                log.warning(
                    "push notifications of task %s dropped: more than %d updates waiting; "
                    "the oldest go first",
                    task_id,
                    self._max_queued,
                    extra=_ids(task_id, config_id),
                )
        lane.items.append(item)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        worker = asyncio.create_task(work)
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        return worker

    async def _dispatch(self, task_id: str, lane: _Lane) -> None:
        """Fan the task's queued updates out to its webhooks' lanes, in order."""
        try:
            while lane.items:
                batch = [update for update, _ in lane.items]
                lane.items.clear()
                configs = await self._configs(task_id)
                for update in batch:
                    for config in configs:
                        self._to_hook(task_id, config, update)
        finally:
            lane.worker = None
            if self._tasks.get(task_id) is lane:
                del self._tasks[task_id]

    async def _configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """The task's configs; a Redis error is retried like a delivery, then given up."""
        failures = 0
        started = time.monotonic()
        while True:
            try:
                return await self._store.get_info_for_dispatch(task_id)
            except (RedisError, OSError) as exc:
                failures += 1
                delay = self._retry.delay(failures)
                if (
                    failures >= self._retry.max_attempts
                    or time.monotonic() - started + delay > self._retry.give_up_s
                ):
                    DELIVERIES.labels(self._agent, "gave_up").inc()
                    log.warning(
                        "push notifications of task %s given up: configs unreadable: %s",
                        task_id,
                        exc,
                        extra=_ids(task_id),
                    )
                    return []
                await asyncio.sleep(delay)

    def _to_hook(self, task_id: str, config: TaskPushNotificationConfig, update: _Update) -> None:
        key = (task_id, config.id)
        lane = self._hooks.setdefault(key, _Lane())
        self._enqueue(lane, (update, config), task_id, config.id)
        if lane.worker is None:
            lane.worker = self._spawn(self._deliver_lane(key, lane))

    async def _deliver_lane(self, key: tuple[str, str], lane: _Lane) -> None:
        try:
            while lane.items:
                update, config = lane.items.popleft()
                if config is not None:
                    await self._deliver(key[0], config, update)
        finally:
            lane.worker = None
            if self._hooks.get(key) is lane:
                del self._hooks[key]

    async def _deliver(
        self, task_id: str, config: TaskPushNotificationConfig, update: _Update
    ) -> None:
        """POST one update to one webhook until it is accepted or the retry budget is spent."""
        body = _body(update)
        started = time.monotonic()
        failures = 0
        while True:
            failure = await self._attempt(config, update, body)
            if failure is None:
                DELIVERIES.labels(self._agent, "delivered").inc()
                log.debug("push notification delivered", extra=_ids(task_id, config.id))
                return
            failures += 1
            RETRIES.labels(self._agent).inc()
            delay = self._retry.delay(failures, failure.retry_after_s)
            if (
                not failure.retryable
                or failures >= self._retry.max_attempts
                or time.monotonic() - started + delay > self._retry.give_up_s
            ):
                break
            await asyncio.sleep(delay)
        DELIVERIES.labels(self._agent, "gave_up").inc()
        log.warning(
            "push notification given up after %d attempt(s): task %s, config %s, %s %s: %s",
            failures,
            task_id,
            config.id,
            update.kind,
            redact_url(config.url),
            failure.reason,
            extra={**_ids(task_id, config.id), "event_id": update.event_id},
        )

    async def _attempt(
        self, config: TaskPushNotificationConfig, update: _Update, body: bytes
    ) -> _Failure | None:
        """One delivery attempt (URL check and DNS included), bounded by the timeout."""
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: update.event_id}
        if config.token:
            headers[TOKEN_HEADER] = config.token
        auth = config.authentication
        if config.HasField("authentication") and auth.scheme and auth.credentials:
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        try:
            async with asyncio.timeout(self._retry.timeout_s):
                refusal = await self._policy.check(config.url)
                if refusal is not None:
                    return _Failure(f"URL refused: {refusal.reason}", refusal.transient)
                async with self._http.stream(
                    "POST", config.url, content=body, headers=headers
                ) as response:
                    read = 0  # a little of the answer is read, so the connection can be reused
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
        except TimeoutError:
            return _Failure(f"no answer within {self._retry.timeout_s:g}s", retryable=True)
        except httpx.HTTPError as exc:
            return _Failure(f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return None
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        return _Failure(f"HTTP {status}", retryable, _retry_after(response))

    async def aclose(self) -> None:
        """Wait up to ``drain_s`` for queued deliveries, drop the rest, close the client."""
        deadline = time.monotonic() + self._drain_s
        while self._workers and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._workers), timeout=remaining)
        self._closed = True
        left = self.pending
        for worker in list(self._workers):
            worker.cancel()
        if self._workers:
            await asyncio.wait(set(self._workers))
        if left:
            DELIVERIES.labels(self._agent, "dropped").inc(left)
            log.warning(
                "push notifications dropped at shutdown: %d not delivered within %gs",
                left,
                self._drain_s,
                extra={"agent": self._agent},
            )
        await self._http.aclose()


def _state(event: PushNotificationEvent) -> TaskState | None:
    if isinstance(event, Task | TaskStatusUpdateEvent):
        return event.status.state
    return None


def _kind(event: PushNotificationEvent) -> str:
    if isinstance(event, TaskStatusUpdateEvent):
        return "status_update"
    if isinstance(event, TaskArtifactUpdateEvent):
        return "artifact_update"
    return "task"


def _ids(task_id: str, config_id: str = "") -> dict[str, str]:
    return {"task_id": task_id, "config_id": config_id} if config_id else {"task_id": task_id}


def _body(update: _Update) -> bytes:
    """The update as the SDK's ``StreamResponse`` JSON (what a streaming client would see)."""
    event = _EVENT_TYPES[update.kind].FromString(update.raw)
    return json.dumps(MessageToDict(to_stream_response(event))).encode()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# --- the factory -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PushParts:
    """What the request handler needs for push notifications, and how to stop delivering."""

    config_store: RedisPushConfigStore
    sender: PushSender
    url_validator: Callable[[str], Awaitable[bool]]
    aclose: Callable[[], Awaitable[None]]


def push_parts(
    redis: aioredis.Redis, agent_name: str, keys: RedisKeys, settings: AgentSettings
) -> PushParts:
    """The config store, sender and URL policy of one agent, from its settings."""
    policy = PushUrlPolicy(
        allow_private=settings.push_allow_private,
        allowed_hosts=settings.push_allowed_hosts,
        timeout_s=settings.push_timeout_s,
    )
    store = RedisPushConfigStore(
        redis,
        agent_name,
        keys=keys,
        retention_s=settings.task_retention_s,
        max_per_task=settings.push_max_configs_per_task,
    )
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.push_timeout_s,
            connect=min(settings.connect_timeout_s, settings.push_timeout_s),
        ),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": f"scriptorium-{agent_name}"},
    )
    sender = PushSender(
        store,
        policy,
        http,
        agent=agent_name,
        retry=RetryPolicy(
            max_attempts=settings.push_max_attempts,
            first_delay_s=settings.push_backoff_s,
            max_delay_s=settings.push_backoff_max_s,
            give_up_s=settings.push_give_up_s,
            timeout_s=settings.push_timeout_s,
        ),
        max_queued=settings.push_max_queued,
        drain_s=settings.push_drain_s,
    )
    return PushParts(store, sender, policy, sender.aclose)
