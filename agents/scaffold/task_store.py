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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

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

from protocol.streams import ORPHANED, SETTLED_STATES, TERMINAL_STATES, stamp
from registry.keys import RedisKeys
from registry.redisio import Arg, Script, text

ANONYMOUS = "anonymous"
RETRY_DELAY_S = 0.5
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
#: KEYS: task hash, owner's task index, task event stream.
#: ARGV: expected version, new version, snapshot, state, owner, runner, retention ms,
#: index score, task id, foreign ('1': refuse if the stored task is absent or terminal),
#: then (sequence, event) pairs. Returns {1, new} or {0, stored version}.
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
        'o', ARGV[5], 'r', ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
    redis.call('ZADD', KEYS[2], ARGV[8], ARGV[9])
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
    if #ARGV > 10 then
        for i = 11, #ARGV, 2 do
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
        retention_s: float = 7 * 24 * 3600,
        owner_resolver: OwnerResolver = resolve_user_scope,
        coalesce_s: float = COALESCE_S,
    ) -> None:
        self._redis = redis
        self._coalesce_s = coalesce_s
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
            await asyncio.shield(self._flush(task.id, slot))
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

    async def _flush(self, task_id: str, slot: _Slot, *, once: bool = False) -> None:
        """Store the slot's newest version (one writer at a time); retry while Redis is away.

        ``once`` (background writes): store what is there now and leave what arrives
        meanwhile to the next coalescing window — else a steady stream of updates would
        be written one by one. Otherwise write until nothing is pending.
        """
        async with slot.lock:
            failing = False
            target = slot.version
            while slot.stored < (target if once else slot.version) and not slot.conflicted:
                version, task, events = slot.version, slot.task, list(slot.events)
                try:
                    ok, current = await self._write(
                        task, slot.owner, expected=slot.stored, version=version, events=events
                    )
                except (RedisError, OSError) as exc:
                    if not failing:
                        log.warning("task write failed; retrying", extra={"error": str(exc)})
                    failing = True
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
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
            elif slot.stored < slot.version and slot.timer is None:
                loop = asyncio.get_running_loop()
                slot.timer = loop.call_later(self._coalesce_s, self._flush_later, task_id, slot)

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
        )
        args: list[Arg] = [
            expected,
            version,
            task.SerializeToString(),
            int(task.status.state),
            owner,
            self.runner_id,
            self._retention_ms,
            _sort_key(task)[1] // 1_000_000,
            task.id,
            "1" if foreign else "0",
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
        stored = await self._redis.hmget(self._keys.task(self._agent, task_id), ["t", "o", "r"])
        raw, owner, runner = stored
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
        """Store everything still pending (used on shutdown)."""
        for task_id, slot in list(self._slots.items()):
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
            await self._flush(task_id, slot)

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
        raw, version, stored_owner = await self._redis.hmget(
            self._keys.task(self._agent, task_id), ["t", "v", "o"]
        )
        if raw is None or stored_owner is None or text(stored_owner) != owner:
            return None
        return StoredTask(Task.FromString(raw), TaskVersion(int(version or 0)))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks of the caller, newest update first, filtered and paginated like the SDK's."""
        owner = self.owner_of(context)
        index = self._keys.task_index(self._agent, owner)
        ids = [text(i) for i in await self._redis.zrevrange(index, 0, -1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(self._keys.task(self._agent, task_id), ["t", "o"])
            rows = await pipe.execute() if ids else []
        by_id = {
            task.id: task
            for task in (
                Task.FromString(raw)
                for raw, stored_owner in rows
                if raw is not None and stored_owner is not None and text(stored_owner) == owner
            )
        }
        for task_id, slot in self._slots.items():
            if slot.owner == owner and not slot.conflicted:
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
        """Delete a task and its events; deleting an unknown task does nothing."""
        owner = self.owner_of(context)
        slot = self._slots.get(task_id)
        if slot is not None and slot.owner == owner:
            self._drop(task_id)
            if slot.writer is not None:
                slot.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.writer
        stored_owner = await self._redis.hget(self._keys.task(self._agent, task_id), "o")
        if stored_owner is not None and text(stored_owner) != owner:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.task(self._agent, task_id))
            pipe.delete(self._keys.task_events(self._agent, task_id))
            pipe.zrem(self._keys.task_index(self._agent, owner), task_id)
            await pipe.execute()


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


def _sort_key(task: Task) -> tuple[bool, int, str]:
    has_ts = task.HasField("status") and task.status.HasField("timestamp")
    return (has_ts, task.status.timestamp.ToNanoseconds() if has_ts else 0, task.id)


class _FreshIds(IDGenerator):
    """UUID task ids, each noted as new in the store that made this generator."""

    def __init__(self, store: RedisTaskStore) -> None:
        self._store = store

    def generate(self, context: IDGeneratorContext) -> str:
        task_id = str(uuid.uuid4())
        self._store._mark_fresh(task_id)
        return task_id
