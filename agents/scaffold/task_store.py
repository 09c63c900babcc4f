"""An A2A task store in Redis: tasks survive a restart and every replica sees them.

A sibling of the SDK's ``InMemoryTaskStore`` and ``DatabaseTaskStore`` behind the same
four-method ``TaskStore`` contract. Tasks are stored as protobuf bytes, one key each, with a
per-owner sorted set (score = last status update in ms) for listing. Both expire after
``retention_s`` so Redis does not grow without bound.

Writes of a task this process is running are ordered and coalesced: an intermediate state
(submitted, working, a new artifact) is written in the background, the latest version
winning, while a final or interrupted state (completed, failed, canceled, rejected,
input-required) is written before ``save`` returns. The SDK's many reads of a running task
are answered from that write queue, so a SendMessage costs about two Redis round trips
instead of seven. A write that fails (Redis away) is retried until it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from a2a.server.context import ServerCallContext
from a2a.server.id_generator import IDGenerator, IDGeneratorContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks.task_store import TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task, TaskState
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    encode_list_tasks_cursor,
)
from redis.exceptions import RedisError

from registry.keys import RedisKeys
from registry.redisio import Script, text

ANONYMOUS = "anonymous"
#: States after which the executor waits for someone: written through, not behind.
SETTLED_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
        TaskState.TASK_STATE_AUTH_REQUIRED,
    }
)
RETRY_DELAY_S = 0.5
_SAVE = Script(
    "task_save",
    """
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return 1
    """,
)
#: How long an id minted here is known to be new if no save follows (then Redis decides).
FRESH_TTL_S = 60.0
#: How long an intermediate state may wait to be coalesced with the states after it. Streamed
#: artifacts (one event per token) land at most this often; a final state never waits.
COALESCE_S = 0.25
log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """The newest unwritten version of one task, and who is writing it."""

    owner: str
    task: Task
    version: int = 0
    written: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    writer: asyncio.Task[None] | None = None


def _sort_key(task: Task) -> tuple[bool, int, str]:
    has_ts = task.HasField("status") and task.status.HasField("timestamp")
    return (has_ts, task.status.timestamp.ToNanoseconds() if has_ts else 0, task.id)


class RedisTaskStore(TaskStore):
    """A2A tasks of one agent (shared by all its replicas), scoped by owner."""

    def __init__(
        self,
        redis: aioredis.Redis,
        agent: str,
        *,
        keys: RedisKeys | None = None,
        retention_s: float = 7 * 24 * 3600,
        owner_resolver: OwnerResolver = resolve_user_scope,
    ) -> None:
        self._redis = redis
        self._agent = agent
        self._keys = keys or RedisKeys()
        self._retention_ms = int(retention_s * 1000)
        self._owner_resolver = owner_resolver
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._fresh: dict[str, float] = {}

    def _owner(self, context: ServerCallContext) -> str:
        return self._owner_resolver(context) or ANONYMOUS

    def id_generator(self) -> IDGenerator:
        """A task-id generator whose ids this store knows to be new (no lookup needed).

        The SDK looks a task up several times before its first save; for an id it has just
        minted those lookups cannot find anything, so they need not reach Redis.
        """
        return _FreshIds(self)

    def _mark_fresh(self, task_id: str) -> None:
        now = time.monotonic()
        if len(self._fresh) > 10_000:
            self._fresh = {k: t for k, t in self._fresh.items() if t > now}
        self._fresh[task_id] = now + FRESH_TTL_S

    async def save(self, task: Task, context: ServerCallContext) -> None:
        """Save or update a task; settled states are durable when this returns."""
        owner = self._owner(context)
        self._fresh.pop(task.id, None)
        key = (owner, task.id)
        slot = self._pending.get(key)
        if slot is None:
            slot = self._pending[key] = _Pending(owner, Task())
        slot.task = Task()
        slot.task.CopyFrom(task)
        slot.version += 1
        if task.status.state in SETTLED_STATES:
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            await asyncio.shield(self._flush_slot(key, slot))
        elif slot.timer is None and (slot.writer is None or slot.writer.done()):
            loop = asyncio.get_running_loop()
            slot.timer = loop.call_later(COALESCE_S, self._flush_later, key, slot)

    def _flush_later(self, key: tuple[str, str], slot: _Pending) -> None:
        """The coalescing window closed: write the newest intermediate state."""
        slot.timer = None
        slot.writer = asyncio.create_task(self._flush_slot(key, slot))

    async def _flush_slot(self, key: tuple[str, str], slot: _Pending) -> None:
        """Write the newest version (one writer at a time); retry while Redis is away."""
        async with slot.lock:
            failing = False
            while slot.written < slot.version:
                version, task = slot.version, slot.task
                try:
                    await self._write(slot.owner, task)
                except (RedisError, OSError) as exc:
                    if not failing:
                        log.warning("task write failed; retrying", extra={"error": str(exc)})
                    failing = True
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                slot.written = version
            if self._pending.get(key) is slot:
                del self._pending[key]

    async def _write(self, owner: str, task: Task) -> None:
        keys = (
            self._keys.task(self._agent, owner, task.id),
            self._keys.task_index(self._agent, owner),
        )
        score = _sort_key(task)[1] // 1_000_000
        args = (task.SerializeToString(), self._retention_ms, score, task.id)
        await _SAVE.run(self._redis, keys, args)

    async def flush(self) -> None:
        """Write everything still pending (used on shutdown)."""
        for key, slot in list(self._pending.items()):
            await self._flush_slot(key, slot)

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        """The task, or None if unknown (or owned by someone else)."""
        owner = self._owner(context)
        slot = self._pending.get((owner, task_id))
        if slot is not None:
            copy = Task()
            copy.CopyFrom(slot.task)
            return copy
        if self._fresh.get(task_id, 0.0) > time.monotonic():
            return None  # minted here a moment ago: it exists nowhere yet
        raw = await self._redis.get(self._keys.task(self._agent, owner, task_id))
        return None if raw is None else Task.FromString(raw)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks of the caller, newest update first, filtered and paginated like the SDK's."""
        owner = self._owner(context)
        index = self._keys.task_index(self._agent, owner)
        ids = [text(i) for i in await self._redis.zrevrange(index, 0, -1)]
        raws = await self._redis.mget([self._keys.task(self._agent, owner, i) for i in ids])
        by_id = {task.id: task for task in (Task.FromString(raw) for raw in raws if raw)}
        for (slot_owner, task_id), slot in self._pending.items():
            if slot_owner == owner:
                by_id[task_id] = slot.task
        tasks = list(by_id.values())
        if params.context_id:
            tasks = [t for t in tasks if t.context_id == params.context_id]
        if params.status:
            tasks = [t for t in tasks if t.status.state == params.status]
        if params.HasField("status_timestamp_after"):
            after_ns = params.status_timestamp_after.ToNanoseconds()
            tasks = [t for t in tasks if _sort_key(t)[0] and _sort_key(t)[1] >= after_ns]
        tasks.sort(key=_sort_key, reverse=True)
        start = 0
        if params.page_token:
            cursor = decode_list_tasks_cursor(params.page_token)
            if cursor is None:
                raise InvalidParamsError(f"Invalid page token: {params.page_token}")
            after = cursor.sort_key()
            start = next((i for i, t in enumerate(tasks) if _sort_key(t) < after), len(tasks))
        page_size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
        page = tasks[start : start + page_size]
        next_token = None
        if start + page_size < len(tasks):
            has_ts, ts, last_id = _sort_key(page[-1])
            next_token = encode_list_tasks_cursor(
                ListTasksCursor(timestamp_ns=ts if has_ts else None, task_id=last_id)
            )
        return ListTasksResponse(
            tasks=page, next_page_token=next_token, total_size=len(tasks), page_size=page_size
        )

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        """Delete a task; deleting an unknown task does nothing."""
        owner = self._owner(context)
        slot = self._pending.pop((owner, task_id), None)
        if slot is not None and slot.timer is not None:
            slot.timer.cancel()
        if slot is not None and slot.writer is not None:
            slot.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.writer
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.task(self._agent, owner, task_id))
            pipe.zrem(self._keys.task_index(self._agent, owner), task_id)
            await pipe.execute()


class _FreshIds(IDGenerator):
    """UUID task ids, each noted as new in the store that made this generator."""

    def __init__(self, store: RedisTaskStore) -> None:
        self._store = store

    def generate(self, context: IDGeneratorContext) -> str:
        task_id = str(uuid.uuid4())
        self._store._mark_fresh(task_id)
        return task_id
