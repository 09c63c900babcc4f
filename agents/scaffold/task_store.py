"""A2A tasks in Redis for every replica of an agent: versioned snapshots and an event log.

This is a2a-sdk 1.3's cluster seam (:class:`VersionedTaskStore`) on Redis. Each task is a
hash — protobuf snapshot, version, state, owner, runner — and each task's events are a Redis
Stream whose entry ids are ``0-<version>``: the version a write produces is the sequence of
the event it records, so "the snapshot at version v plus the stream after v" is always the
whole task. Every write is a compare-and-swap on the version (one Lua script):
a stale writer gets :class:`ConcurrentTaskModificationError`, never overwrites.

Writes of a task this process runs are ordered and coalesced. Intermediate states (working,
a streamed artifact chunk) wait up to ``coalesce_s`` and land together in one script call;
final and interrupted states are durable before ``save`` returns. A new task whose client
hears of it before it ends (a stream, ``return_immediately``) is sent at once, not awaited,
so any replica can answer for it; a plain SendMessage costs one write. A write that another
replica got in first (a cancel) is noticed at the coalesced flush and reported on the
running task's next write, which is how the SDK learns to stop. Writes by a replica that
does not run the task (cancel, declaring an orphan failed) advance the sequence by a whole
``FOREIGN_STRIDE``, past any event the running replica may have sent but not yet stored.

A process announces itself with a runner key refreshed every few seconds; a task whose
runner key is gone while the task is unfinished was orphaned by a crash, and
:meth:`RedisTaskStore.fail_orphan` records that as FAILED so no subscriber waits forever.

Redis away: no request waits longer than ``timeout_s`` for the store. A read, or a settled
state that cannot be stored in time, raises :class:`~protocol.errors.TaskStoreUnavailableError`
(the client is told to retry); the task is then recorded FAILED in memory and in Redis as
soon as it is back, so nobody who heard of it waits for it forever. Intermediate states keep
being retried in the background.

Retention: a task, its events and its index entries live ``retention_s`` after its last
write. Each owner's tasks are indexed by status time in a sorted set (and per context in
another); every write trims the entries older than the retention, so the index stays as
large as the tasks it points to, and ListTasks pages through it in Redis
(ZREVRANGEBYSCORE ... LIMIT), reading only the tasks of the page.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from a2a.server.cluster import (
    ConcurrentTaskModificationError,
    StoredTask,
    TaskVersion,
    VersionedTaskStore,
)
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.id_generator import IDGenerator, IDGeneratorContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.types import (
    ListTasksRequest,
    ListTasksResponse,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.proto_utils import to_stream_response
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    encode_list_tasks_cursor,
)
from redis.exceptions import RedisError

from protocol.errors import TaskStoreUnavailableError, task_store_unavailable
from protocol.streams import ORPHANED, SETTLED_STATES, TERMINAL_STATES, stamp
from registry.keys import RedisKeys
from registry.redisio import Arg, Script, text

ANONYMOUS = "anonymous"
RETRY_DELAY_S = 0.5
#: Longest pause between background attempts to store a task while Redis is away.
RETRY_MAX_DELAY_S = 5.0
#: How long a request waits for Redis before the store gives up (TASK_STORE_UNAVAILABLE).
TIMEOUT_S = 3.0
#: How long a task (events, index entries) is kept after its last write.
RETENTION_S = 24 * 3600.0
#: What a task that could not be stored in time ends with.
STORE_UNREACHABLE = (
    "the task store (Redis) was unreachable when this task ended, so its result was not "
    "kept; send the request again"
)
#: Index entries read per round trip while paging.
LIST_BATCH = 256
_Scored = list[tuple[bytes, float]]
#: How long an intermediate state may wait to be stored with the states after it.
COALESCE_S = 0.25
#: How long an id minted here is known to be new if no save follows (then Redis decides).
FRESH_TTL_S = 60.0
#: Call-context flag: the client learns of a new task before it ends, so store it at once.
ANNOUNCE_NEW_TASKS = "scriptorium.announce_new_tasks"
#: Sequence step of a write by a replica that does not run the task (see module docstring).
FOREIGN_STRIDE = 1 << 20
RUNNER_TTL_S = 6.0
RUNNER_REFRESH_S = 2.0

_TERMINAL_LUA = "{" + ", ".join(f"['{int(s)}'] = true" for s in sorted(TERMINAL_STATES)) + "}"
#: KEYS: task hash, owner's task index, task event stream, owner's index of the task's context.
#: ARGV: expected version, new version, snapshot, state, owner, runner, retention ms,
#: index score (status time, µs), task id, foreign ('1': refuse if the stored task is absent
#: or terminal), oldest score kept in the indexes, context id, then (sequence, event) pairs.
#: Returns {1, new} or {0, stored version}.
_WRITE = Script(
    "task_write",
    f"""
    local terminal = {_TERMINAL_LUA}
    local stored = redis.call('HMGET', KEYS[1], 'v', 's', 'o')
    local current = tonumber(stored[1] or '0')
    if current ~= tonumber(ARGV[1]) then return {{0, current}} end
    if ARGV[10] == '1' and (not stored[2] or terminal[stored[2]]) then
        return {{0, current}}
    end
    if stored[3] and stored[3] ~= ARGV[5] then return {{0, current}} end
    redis.call('HSET', KEYS[1], 't', ARGV[3], 'v', ARGV[2], 's', ARGV[4],
        'o', ARGV[5], 'r', ARGV[6], 'c', ARGV[12])
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
    local indexes = {{KEYS[2]}}
    if ARGV[12] ~= '' then indexes[2] = KEYS[4] end
    for _, index in ipairs(indexes) do
        redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[11])
        redis.call('ZADD', index, ARGV[8], ARGV[9])
        redis.call('PEXPIRE', index, ARGV[7])
    end
    if #ARGV > 12 then
        for i = 13, #ARGV, 2 do
            redis.call('XADD', KEYS[3], '0-' .. ARGV[i], 'e', ARGV[i + 1])
        end
        redis.call('PEXPIRE', KEYS[3], ARGV[7])
    end
    return {{1, tonumber(ARGV[2])}}
    """,
)
log = logging.getLogger(__name__)


@dataclass
class _Slot:
    """A task this process is writing: its newest state and the events not yet stored."""

    owner: str
    task: Task
    version: int
    stored: int
    events: list[tuple[int, bytes]] = field(default_factory=list)
    conflicted: bool = False
    #: Redis refused the last attempt; the next background one waits ``backoff_s``.
    failing: bool = False
    backoff_s: float = RETRY_DELAY_S
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    writer: asyncio.Task[None] | None = None


class RedisTaskStore(VersionedTaskStore):
    """A2A tasks of one agent, shared by all its replicas, scoped by owner."""

    def __init__(
        self,
        redis: aioredis.Redis,
        agent: str,
        *,
        keys: RedisKeys | None = None,
        retention_s: float = RETENTION_S,
        owner_resolver: OwnerResolver = resolve_user_scope,
        coalesce_s: float = COALESCE_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._redis = redis
        self._coalesce_s = coalesce_s
        self._timeout_s = timeout_s
        self._agent = agent
        self._keys = keys or RedisKeys()
        self._retention_ms = int(retention_s * 1000)
        self._owner_resolver = owner_resolver
        self._slots: dict[str, _Slot] = {}
        self._fresh: dict[str, float] = {}
        self._unsettled: set[str] = set()
        self._settled = asyncio.Event()
        self._settled.set()
        self.runner_id = uuid.uuid4().hex
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    @property
    def agent(self) -> str:
        return self._agent

    @property
    def timeout_s(self) -> float:
        """Longest a request waits for Redis through this store."""
        return self._timeout_s

    def owner_of(self, context: ServerCallContext) -> str:
        """Whose tasks a call may see and change."""
        return self._owner_resolver(context) or ANONYMOUS

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this process as a runner of the agent's tasks (refreshed until closed)."""
        await self._announce()
        self._heartbeat = asyncio.create_task(self._keep_announcing(), name="task-runner")

    async def aclose(self) -> None:
        """Store everything pending, then withdraw the runner key (unfinished tasks orphan)."""
        await self.flush()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._keys.task_runner(self._agent, self.runner_id))

    async def _announce(self) -> None:
        key = self._keys.task_runner(self._agent, self.runner_id)
        await self._redis.set(key, b"1", px=int(RUNNER_TTL_S * 1000))

    async def _keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(RUNNER_REFRESH_S)
            try:
                await self._announce()
            except (RedisError, OSError) as exc:
                log.warning("task runner heartbeat failed", extra={"error": str(exc)})

    async def runner_alive(self, runner_id: str) -> bool:
        """Whether the process ``runner_id`` still runs this agent's tasks."""
        if runner_id == self.runner_id:
            return True
        return bool(await self._redis.exists(self._keys.task_runner(self._agent, runner_id)))

    # -- ids ---------------------------------------------------------------------------

    def id_generator(self) -> IDGenerator:
        """Task ids this store knows to be new, so the SDK's lookups of them skip Redis."""
        return _FreshIds(self)

    def _mark_fresh(self, task_id: str) -> None:
        now = time.monotonic()
        if len(self._fresh) > 10_000:
            self._fresh = {k: t for k, t in self._fresh.items() if t > now}
        self._fresh[task_id] = now + FRESH_TTL_S

    # -- writes ------------------------------------------------------------------------

    async def save(
        self,
        task: Task,
        *,
        event: Event | None = None,
        prev: Task | None = None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        """Write ``task`` (and log ``event``) if nobody else wrote since ``prev_version``."""
        del prev
        owner = self.owner_of(context)
        self._fresh.pop(task.id, None)
        if task.status.state == TaskState.TASK_STATE_CANCELED:
            return TaskVersion(await self._write_foreign(task, event, owner))
        slot = self._slots.get(task.id)
        base = version_number(prev_version)
        if slot is not None and (slot.conflicted or slot.owner != owner):
            self._drop(task.id)
            raise ConcurrentTaskModificationError(task.id)
        if slot is None:
            slot = self._slots[task.id] = _Slot(owner, Task(), version=base, stored=base)
        elif slot.version != base:
            raise ConcurrentTaskModificationError(task.id)
        version = slot.version + 1
        if (logged := _loggable(event, first=base == 0)) is not None:
            slot.events.append((version, _event_bytes(logged, version)))
        # Kept by reference, not copied (a copy per streamed chunk is quadratic): the SDK
        # changes a task only right before saving it, and a write serialises it at once.
        slot.task = task
        slot.version = version
        self._note_state(task)
        if task.status.state in SETTLED_STATES:
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            deadline = asyncio.get_running_loop().time() + self._timeout_s
            flush = asyncio.ensure_future(self._flush(task.id, slot, deadline=deadline))
            # Even when this request is cancelled meanwhile (shield), a task whose end Redis
            # did not take in time is failed over.
            flush.add_done_callback(lambda done: self._failed_over_if_unstored(done, slot))
            await asyncio.shield(flush)
            if slot.conflicted:
                self._drop(task.id)
                raise ConcurrentTaskModificationError(task.id)
        elif base == 0 and context.state.get(ANNOUNCE_NEW_TASKS):
            # The client hears of this task before it ends (a stream, return_immediately) and
            # may ask another replica about it: store it straight away (not awaited).
            slot.writer = asyncio.create_task(self._flush(task.id, slot, once=True))
        elif slot.timer is None and (slot.writer is None or slot.writer.done()):
            loop = asyncio.get_running_loop()
            slot.timer = loop.call_later(self._coalesce_s, self._flush_later, task.id, slot)
        return TaskVersion(version)

    def _flush_later(self, task_id: str, slot: _Slot) -> None:
        """The coalescing window closed: store the newest state and the events so far."""
        slot.timer = None
        slot.writer = asyncio.create_task(self._flush(task_id, slot, once=True))

    async def _flush(
        self, task_id: str, slot: _Slot, *, once: bool = False, deadline: float | None = None
    ) -> None:
        """Store the slot's newest version (one writer at a time), trying until ``deadline``.

        ``once`` (background writes): store what is there now and leave what arrives
        meanwhile to the next coalescing window — else a steady stream of updates would
        be written one by one. Otherwise write until nothing is pending.

        With a ``deadline`` (a request waits) Redis not answering in time raises
        TaskStoreUnavailableError; without one (background) the write is tried again later,
        waiting longer each time Redis still does not answer.
        """
        loop = asyncio.get_running_loop()
        give_up_at = deadline if deadline is not None else loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(give_up_at):
                await slot.lock.acquire()
        except TimeoutError:
            if deadline is not None:
                raise task_store_unavailable(self._timeout_s, self._timeout_s) from None
            self._retry_later(task_id, slot)
            return
        try:
            target = slot.version
            while slot.stored < (target if once else slot.version) and not slot.conflicted:
                version, task, events = slot.version, slot.task, list(slot.events)
                try:
                    async with asyncio.timeout_at(give_up_at):
                        ok, current = await self._write(
                            task, slot.owner, expected=slot.stored, version=version, events=events
                        )
                except (RedisError, OSError, TimeoutError) as exc:
                    if not slot.failing:
                        log.warning(
                            "task write failed; retrying",
                            extra={"task_id": task_id, "error": str(exc) or type(exc).__name__},
                        )
                    slot.failing = True
                    if loop.time() + RETRY_DELAY_S < give_up_at:
                        await asyncio.sleep(RETRY_DELAY_S)
                        continue
                    if deadline is not None:
                        raise task_store_unavailable(self._timeout_s, self._timeout_s) from exc
                    break
                if slot.failing:
                    log.info("task write succeeded again", extra={"task_id": task_id})
                slot.failing = False
                slot.backoff_s = RETRY_DELAY_S
                if not ok:
                    log.info(
                        "task changed by another replica",
                        extra={"task_id": task_id, "stored": current, "ours": slot.stored},
                    )
                    slot.conflicted = True
                    slot.events.clear()
                    break
                slot.stored = version
                del slot.events[: len(events)]
            if slot.conflicted:
                return
            if slot.task.status.state in TERMINAL_STATES and slot.stored == slot.version:
                if self._slots.get(task_id) is slot:
                    del self._slots[task_id]
            elif slot.stored < slot.version:
                self._retry_later(task_id, slot)
        finally:
            slot.lock.release()

    def _retry_later(self, task_id: str, slot: _Slot) -> None:
        """Schedule the slot's next background write (later and later while Redis is away)."""
        if slot.timer is not None or self._slots.get(task_id) is not slot:
            return
        delay = self._coalesce_s
        if slot.failing:
            delay = slot.backoff_s
            slot.backoff_s = min(slot.backoff_s * 2, RETRY_MAX_DELAY_S)
        loop = asyncio.get_running_loop()
        slot.timer = loop.call_later(delay, self._flush_later, task_id, slot)

    def _failed_over_if_unstored(self, flush: asyncio.Future[None], slot: _Slot) -> None:
        if not flush.cancelled() and isinstance(flush.exception(), TaskStoreUnavailableError):
            self._fail_over(slot.task.id, slot)

    def _fail_over(self, task_id: str, slot: _Slot) -> None:
        """Redis did not take a settled state in time, and the client is told to retry: the
        task ends FAILED instead — here at once, in Redis when it is back (in the background).

        The events not stored are dropped; the FAILED update follows every sequence this
        process may have streamed, so a subscriber resuming from any cursor ends with it.
        """
        if slot.conflicted or self._slots.get(task_id) is not slot:
            return
        failed = Task()
        failed.CopyFrom(slot.task)
        failed.status.state = TaskState.TASK_STATE_FAILED
        failed.status.message.Clear()
        failed.status.message.role = Role.ROLE_AGENT
        failed.status.message.message_id = uuid.uuid4().hex
        failed.status.message.task_id = task_id
        failed.status.message.context_id = failed.context_id
        failed.status.message.parts.add().text = STORE_UNREACHABLE
        failed.status.timestamp.GetCurrentTime()
        update = TaskStatusUpdateEvent(
            task_id=task_id, context_id=failed.context_id, status=failed.status
        )
        slot.version += 1
        slot.events = [(slot.version, _event_bytes(update, slot.version))]
        slot.task = failed
        self._note_state(failed)
        log.warning("task failed: the task store is unreachable", extra={"task_id": task_id})
        self._retry_later(task_id, slot)

    async def _write(
        self,
        task: Task,
        owner: str,
        *,
        expected: int,
        version: int,
        events: Sequence[tuple[int, bytes]],
        foreign: bool = False,
    ) -> tuple[bool, int]:
        keys = (
            self._keys.task(self._agent, task.id),
            self._keys.task_index(self._agent, owner),
            self._keys.task_events(self._agent, task.id),
            self._context_index(owner, task.context_id),
        )
        args: list[Arg] = [
            expected,
            version,
            task.SerializeToString(),
            int(task.status.state),
            owner,
            self.runner_id,
            self._retention_ms,
            _score(task),
            task.id,
            "1" if foreign else "0",
            self._oldest_score(),
            task.context_id,
        ]
        for seq, data in events:
            args.extend((seq, data))
        ok, current = await _WRITE.run(self._redis, keys, args)
        return bool(ok), int(current)

    async def _write_foreign(self, task: Task, event: Event | None, owner: str) -> int:
        """A cancel: overwrite the stored task unless it is absent or already final."""
        slot = self._slots.get(task.id)
        if slot is not None:
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            await self._flush(task.id, slot)
            self._drop(task.id)
        return await self.write_over(task, event, owner)

    async def write_over(self, task: Task, event: Event | None, owner: str) -> int:
        """Store a final state written by a replica that may not run the task."""
        async with self._reaching_redis():
            return await self._write_over(task, event, owner)

    async def _write_over(self, task: Task, event: Event | None, owner: str) -> int:
        for _ in range(8):
            raw = await self._redis.hget(self._keys.task(self._agent, task.id), "v")
            current = int(raw or 0)
            version = (current // FOREIGN_STRIDE + 1) * FOREIGN_STRIDE
            logged = _loggable(event, first=current == 0)
            events = [] if logged is None else [(version, _event_bytes(logged, version))]
            ok, stored = await self._write(
                task, owner, expected=current, version=version, events=events, foreign=True
            )
            if ok:
                return version
            if stored == current:  # absent, final, or someone else's: not ours to change
                raise ConcurrentTaskModificationError(task.id)
        raise ConcurrentTaskModificationError(task.id)

    async def fail_orphan(self, task_id: str) -> bool:
        """Record FAILED for an unfinished task whose runner is gone; True if written."""
        async with self._reaching_redis():
            key = self._keys.task(self._agent, task_id)
            raw, owner, runner = await self._redis.hmget(key, ["t", "o", "r"])
            if raw is None or owner is None or runner is None:
                return False
            task = Task.FromString(raw)
            if task.status.state in TERMINAL_STATES or await self.runner_alive(text(runner)):
                return False
        failed = Task()
        failed.CopyFrom(task)
        failed.status.state = TaskState.TASK_STATE_FAILED
        failed.status.message.role = Role.ROLE_AGENT
        failed.status.message.message_id = uuid.uuid4().hex
        failed.status.message.parts.add().text = ORPHANED
        failed.status.timestamp.GetCurrentTime()
        update = TaskStatusUpdateEvent(
            task_id=task_id, context_id=task.context_id, status=failed.status
        )
        try:
            await self.write_over(failed, update, text(owner))
        except ConcurrentTaskModificationError:
            return False
        log.warning("orphaned task failed", extra={"task_id": task_id, "runner": text(runner)})
        return True

    def _note_state(self, task: Task) -> None:
        if task.status.state in SETTLED_STATES:
            self._unsettled.discard(task.id)
        else:
            self._unsettled.add(task.id)
        if self._unsettled:
            self._settled.clear()
        else:
            self._settled.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every task this process writes has settled; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._settled.wait()
        except TimeoutError:
            return False
        return True

    def _drop(self, task_id: str) -> None:
        self._unsettled.discard(task_id)
        if not self._unsettled:
            self._settled.set()
        slot = self._slots.pop(task_id, None)
        if slot is not None and slot.timer is not None:
            slot.timer.cancel()

    async def flush(self) -> None:
        """Store everything still pending (used on shutdown), waiting for Redis at most
        ``timeout_s`` in all."""
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        lost = 0
        for task_id, slot in list(self._slots.items()):
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            try:
                await self._flush(task_id, slot, deadline=deadline)
            except TaskStoreUnavailableError:
                lost += 1
        if lost:
            log.warning("tasks not stored: the task store is unreachable", extra={"tasks": lost})

    # -- reads -------------------------------------------------------------------------

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        """The task with its version, or None if unknown (or owned by someone else)."""
        owner = self.owner_of(context)
        slot = self._slots.get(task_id)
        if slot is not None and not slot.conflicted:
            if slot.owner != owner:
                return None
            copy = Task()
            copy.CopyFrom(slot.task)
            return StoredTask(copy, TaskVersion(slot.version))
        if self._fresh.get(task_id, 0.0) > time.monotonic():
            return None  # minted here a moment ago: it exists nowhere yet
        async with self._reaching_redis():
            raw, version, stored_owner = await self._redis.hmget(
                self._keys.task(self._agent, task_id), ["t", "v", "o"]
            )
        if raw is None or stored_owner is None or text(stored_owner) != owner:
            return None
        return StoredTask(Task.FromString(raw), TaskVersion(int(version or 0)))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks of the caller, newest status first, filtered and paged in Redis.

        The index of the caller's tasks (of one context, with ``context_id``) is read one
        page at a time from the page token's position; only the page's tasks are fetched.
        ``total_size`` is a ZCOUNT; a ``status`` filter reads the state field (a few bytes)
        of each task in the range to count and pick, snapshots still only for the page.
        """
        owner = self.owner_of(context)
        page_size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
        index = (
            self._context_index(owner, params.context_id)
            if params.context_id
            else self._keys.task_index(self._agent, owner)
        )
        low = self._oldest_score()
        if params.HasField("status_timestamp_after"):
            low = max(low, params.status_timestamp_after.ToMicroseconds())
        cursor: tuple[int, str] | None = None
        if params.page_token:
            decoded = decode_list_tasks_cursor(params.page_token)
            if decoded is None or decoded.timestamp_ns is None:
                raise InvalidParamsError(f"Invalid page token: {params.page_token}")
            cursor = (decoded.timestamp_ns // 1000, decoded.task_id)
        async with self._reaching_redis():
            if params.status:
                total, entries = await self._matching(index, low, cursor, params.status, page_size)
            else:
                total = int(await self._redis.zcount(index, low, "+inf"))
                entries = await self._entries(index, low, cursor, page_size + 1)
            tasks = await self._snapshots(owner, [task_id for task_id, _ in entries[:page_size]])
        next_token = None
        if len(entries) > page_size:
            last_id, last_score = entries[page_size - 1]
            next_token = encode_list_tasks_cursor(
                ListTasksCursor(timestamp_ns=last_score * 1000, task_id=last_id)
            )
        return ListTasksResponse(
            tasks=tasks, next_page_token=next_token, total_size=total, page_size=page_size
        )

    async def _entries(
        self, index: str, low: int, cursor: tuple[int, str] | None, count: int
    ) -> builtins.list[tuple[str, int]]:
        """Up to ``count`` (task id, score) of ``index``, newest first, after ``cursor``."""
        high: int | str = cursor[0] if cursor is not None else "+inf"
        found: builtins.list[tuple[str, int]] = []
        offset = 0
        batch = count + 8  # a few to skip: entries of the cursor's own time up to its task
        while len(found) < count:
            rows = cast(
                _Scored,
                await self._redis.zrevrangebyscore(
                    index, high, low, start=offset, num=batch, withscores=True
                ),
            )
            for member, raw_score in rows:
                entry = (text(member), int(raw_score))
                if cursor is not None and entry[1] == cursor[0] and entry[0] >= cursor[1]:
                    continue
                found.append(entry)
                if len(found) == count:
                    break
            if len(rows) < batch:
                break
            offset += batch
        return found

    async def _matching(
        self, index: str, low: int, cursor: tuple[int, str] | None, state: int, page_size: int
    ) -> tuple[int, builtins.list[tuple[str, int]]]:
        """How many tasks of ``index`` are in ``state``, and the page of them after ``cursor``
        (one more than the page, to tell whether another page follows)."""
        total = 0
        page: builtins.list[tuple[str, int]] = []
        offset = 0
        while True:
            rows = cast(
                _Scored,
                await self._redis.zrevrangebyscore(
                    index, "+inf", low, start=offset, num=LIST_BATCH, withscores=True
                ),
            )
            entries = [(text(member), int(score)) for member, score in rows]
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id, _ in entries:
                    pipe.hget(self._keys.task(self._agent, task_id), "s")
                states = await pipe.execute() if entries else []
            for entry, stored_state in zip(entries, states, strict=True):
                if stored_state is None or int(stored_state) != state:
                    continue
                total += 1
                after_cursor = cursor is None or (entry[1], entry[0]) < cursor
                if after_cursor and len(page) <= page_size:
                    page.append(entry)
            if len(rows) < LIST_BATCH:
                return total, page
            offset += LIST_BATCH

    async def _snapshots(self, owner: str, task_ids: builtins.list[str]) -> builtins.list[Task]:
        """The tasks ``task_ids`` of ``owner`` in that order (newer ones held here win)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self._keys.task(self._agent, task_id), ["t", "o"])
            rows = await pipe.execute() if task_ids else []
        tasks = []
        for task_id, (raw, stored_owner) in zip(task_ids, rows, strict=True):
            slot = self._slots.get(task_id)
            if slot is not None and slot.owner == owner and not slot.conflicted:
                copy = Task()
                copy.CopyFrom(slot.task)  # the caller may trim it (artifacts, history)
                tasks.append(copy)
            elif raw is not None and stored_owner is not None and text(stored_owner) == owner:
                tasks.append(Task.FromString(raw))
        return tasks

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        """Delete a task and its events; deleting an unknown task does nothing."""
        owner = self.owner_of(context)
        slot = self._slots.get(task_id)
        if slot is not None and slot.owner == owner:
            self._drop(task_id)
            if slot.writer is not None:
                slot.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.writer
        async with self._reaching_redis():
            key = self._keys.task(self._agent, task_id)
            stored_owner, context_id = await self._redis.hmget(key, ["o", "c"])
            if stored_owner is not None and text(stored_owner) != owner:
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.delete(self._keys.task_events(self._agent, task_id))
                pipe.zrem(self._keys.task_index(self._agent, owner), task_id)
                if context_id:
                    pipe.zrem(self._context_index(owner, text(context_id)), task_id)
                await pipe.execute()

    # -- keys and time -----------------------------------------------------------------

    def _context_index(self, owner: str, context_id: str) -> str:
        """The index of ``owner``'s tasks in one context (next to the owner's own index)."""
        return f"{self._keys.task_index(self._agent, owner)}:context:{context_id}"

    def _oldest_score(self) -> int:
        """The index score (µs) of the oldest status time still within the retention."""
        return int(time.time() * 1_000_000) - self._retention_ms * 1000

    @contextlib.asynccontextmanager
    async def _reaching_redis(self) -> AsyncIterator[None]:
        """Redis calls that may take ``timeout_s`` at most; failing that, the request is
        answered TaskStoreUnavailableError (retry later)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("task store unreachable", extra={"error": str(exc) or type(exc).__name__})
            raise task_store_unavailable(self._timeout_s, self._timeout_s) from exc


def version_number(version: TaskVersion) -> int:
    """The integer a version of this store wraps (0 for MISSING)."""
    if version.is_missing:
        return 0
    value = version._value
    if not isinstance(value, int):
        raise TypeError(f"RedisTaskStore needs integer versions, got {value!r}")
    return value


def _loggable(event: Event | None, *, first: bool) -> Event | None:
    """The event to record in the task's stream: updates always, a Task only when it is new.

    A Task written over an existing one is the SDK saving history, which subscribers never
    see as an event; recording it would make a resumed stream differ from the live one.
    """
    if isinstance(event, TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        return event
    if isinstance(event, Task) and first:
        return event
    return None


def _event_bytes(event: Event, seq: int) -> bytes:
    """Stamp ``seq`` on the event (live subscribers see it too) and serialise it."""
    if isinstance(event, TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        stamp(event.metadata, seq)
        return bytes(to_stream_response(event).SerializeToString())
    response = to_stream_response(event)
    if response.HasField("task"):
        stamp(response.task.metadata, seq)
    return bytes(response.SerializeToString())


def _score(task: Task) -> int:
    """The task's place in the indexes: its status time in µs (now, if it has none)."""
    if task.HasField("status") and task.status.HasField("timestamp"):
        return int(task.status.timestamp.ToMicroseconds())
    return int(time.time() * 1_000_000)


class _FreshIds(IDGenerator):
    """UUID task ids, each noted as new in the store that made this generator."""

    def __init__(self, store: RedisTaskStore) -> None:
        self._store = store

    def generate(self, context: IDGeneratorContext) -> str:
        task_id = str(uuid.uuid4())
        self._store._mark_fresh(task_id)
        return task_id
