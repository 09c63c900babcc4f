"""How one agent's tasks are kept in Redis: keys, the compare-and-swap write, event encoding.

Each task is a hash — protobuf snapshot (``t``), version (``v``), state (``s``), owner
(``o``), runner (``r``), context (``c``) — and each task's events are a Redis Stream whose
entry ids are ``0-<version>``: the version a write produces is the sequence of the event it
records, so "the snapshot at version v plus the stream after v" is always the whole task.
Every write is a compare-and-swap on the version (one Lua script, :data:`WRITE`). Each
owner's tasks are indexed by status time in a sorted set (and per context in another); every
write trims the entries older than the retention.

A write by a replica that does not run the task (cancel, declaring an orphan failed)
advances the sequence by a whole :data:`FOREIGN_STRIDE`, past any event the running replica
may have sent but not yet stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis
from a2a.server.cluster import ConcurrentTaskModificationError, TaskVersion
from a2a.server.events.event_queue import Event
from a2a.types import Role, Task, TaskArtifactUpdateEvent, TaskState, TaskStatusUpdateEvent
from a2a.utils.proto_utils import to_stream_response
from redis.exceptions import RedisError

from protocol.errors import task_store_unavailable
from protocol.streams import TERMINAL_STATES, stamp
from registry.keys import RedisKeys
from registry.redis_client import Arg, Script

#: The owner of a task created by an unauthenticated caller.
ANONYMOUS = "anonymous"
#: Sequence step of a write by a replica that does not run the task (see module docstring).
FOREIGN_STRIDE = 1 << 20
log = logging.getLogger(__name__)

_TERMINAL_LUA = "{" + ", ".join(f"['{int(s)}'] = true" for s in sorted(TERMINAL_STATES)) + "}"
#: KEYS: task hash, owner's task index, task event stream, owner's index of the task's context.
#: ARGV: expected version, new version, snapshot, state, owner, runner, retention ms,
#: index score (status time, µs), task id, foreign ('1': refuse if the stored task is absent
#: or terminal), oldest score kept in the indexes, context id, then (sequence, event) pairs.
#: Returns {1, new} or {0, stored version}.
WRITE = Script(
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


class TaskRecords:
    """The Redis records of one agent's tasks, as written and read by this process."""

    def __init__(
        self, redis: aioredis.Redis, agent: str, keys: RedisKeys, *, retention_s: float
    ) -> None:
        self.redis = redis
        self.agent = agent
        self.keys = keys
        self.retention_ms = int(retention_s * 1000)
        #: This process, as the runner recorded on the tasks it writes.
        self.runner_id = uuid.uuid4().hex

    def task(self, task_id: str) -> str:
        """The hash of a task."""
        return self.keys.task(self.agent, task_id)

    def events(self, task_id: str) -> str:
        """The event stream of a task."""
        return self.keys.task_events(self.agent, task_id)

    def index(self, owner: str, context_id: str = "") -> str:
        """The index of ``owner``'s tasks, or of those in one context (next to it)."""
        index = self.keys.task_index(self.agent, owner)
        return f"{index}:context:{context_id}" if context_id else index

    def oldest_score(self) -> int:
        """The index score (µs) of the oldest status time still within the retention."""
        return int(time.time() * 1_000_000) - self.retention_ms * 1000

    async def write(
        self,
        task: Task,
        owner: str,
        *,
        expected: int,
        version: int,
        events: Sequence[tuple[int, bytes]],
        foreign: bool = False,
    ) -> tuple[bool, int]:
        """Write ``task`` as ``version`` if the stored one is ``expected``; (done, stored)."""
        keys = (
            self.task(task.id),
            self.index(owner),
            self.events(task.id),
            self.index(owner, task.context_id),
        )
        args: list[Arg] = [
            expected,
            version,
            task.SerializeToString(),
            int(task.status.state),
            owner,
            self.runner_id,
            self.retention_ms,
            score(task),
            task.id,
            "1" if foreign else "0",
            self.oldest_score(),
            task.context_id,
        ]
        for seq, data in events:
            args.extend((seq, data))
        ok, current = await WRITE.run(self.redis, keys, args)
        return bool(ok), int(current)

    async def write_over(self, task: Task, event: Event | None, owner: str) -> int:
        """Store a final state as a replica that may not run the task (a foreign write)."""
        for _ in range(8):
            current = int(await self.redis.hget(self.task(task.id), "v") or 0)
            version = (current // FOREIGN_STRIDE + 1) * FOREIGN_STRIDE
            logged = loggable(event, first=current == 0)
            events = [] if logged is None else [(version, event_bytes(logged, version))]
            ok, stored = await self.write(
                task, owner, expected=current, version=version, events=events, foreign=True
            )
            if ok:
                return version
            if stored == current:  # absent, final, or someone else's: not ours to change
                raise ConcurrentTaskModificationError(task.id)
        raise ConcurrentTaskModificationError(task.id)


@contextlib.asynccontextmanager
async def reaching_redis(timeout_s: float) -> AsyncIterator[None]:
    """Redis calls that may take ``timeout_s`` at most; failing that, the request is
    answered TaskStoreUnavailableError (retry later)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("task store unreachable", extra={"error": str(exc) or type(exc).__name__})
        raise task_store_unavailable(timeout_s, timeout_s) from exc


def failed(task: Task, reason: str) -> tuple[Task, TaskStatusUpdateEvent]:
    """A copy of ``task`` ended FAILED saying ``reason``, and the update that says so."""
    copy = Task()
    copy.CopyFrom(task)
    copy.status.state = TaskState.TASK_STATE_FAILED
    copy.status.message.Clear()
    copy.status.message.role = Role.ROLE_AGENT
    copy.status.message.message_id = uuid.uuid4().hex
    copy.status.message.task_id = task.id
    copy.status.message.context_id = task.context_id
    copy.status.message.parts.add().text = reason
    copy.status.timestamp.GetCurrentTime()
    update = TaskStatusUpdateEvent(task_id=task.id, context_id=task.context_id, status=copy.status)
    return copy, update


def version_number(version: TaskVersion) -> int:
    """The integer a version of this store wraps (0 for MISSING)."""
    if version.is_missing:
        return 0
    value = version._value
    if not isinstance(value, int):
        raise TypeError(f"RedisTaskStore needs integer versions, got {value!r}")
    return value


def loggable(event: Event | None, *, first: bool) -> Event | None:
    """The event to record in the task's stream: updates always, a Task only when it is new.

    A Task written over an existing one is the SDK saving history, which subscribers never
    see as an event; recording it would make a resumed stream differ from the live one.
    """
    if isinstance(event, TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        return event
    if isinstance(event, Task) and first:
        return event
    return None


def event_bytes(event: Event, seq: int) -> bytes:
    """Stamp ``seq`` on the event (live subscribers see it too) and serialise it."""
    if isinstance(event, TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        stamp(event.metadata, seq)
        return bytes(to_stream_response(event).SerializeToString())
    response = to_stream_response(event)
    if response.HasField("task"):
        stamp(response.task.metadata, seq)
    return bytes(response.SerializeToString())


def score(task: Task) -> int:
    """The task's place in the indexes: its status time in µs (now, if it has none)."""
    if task.HasField("status") and task.status.HasField("timestamp"):
        return int(task.status.timestamp.ToMicroseconds())
    return int(time.time() * 1_000_000)
