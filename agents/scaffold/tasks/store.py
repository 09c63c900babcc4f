"""A2A tasks in Redis for every replica of an agent: a2a-sdk 1.3's ``VersionedTaskStore``.

The store composes four parts, each in its own module:

* :mod:`agents.scaffold.tasks.records` — the Redis layout (a hash and an event stream per
  task, owner indexes) and the compare-and-swap write: a stale writer gets
  :class:`ConcurrentTaskModificationError`, never overwrites.
* :mod:`agents.scaffold.tasks.writer` — writes of the tasks this process runs, ordered and
  coalesced, retried while Redis is away.
* :mod:`agents.scaffold.tasks.listing` — ListTasks paged in Redis.
* :mod:`agents.scaffold.tasks.runners` — the runner heartbeat, and failing orphaned tasks.

No request waits longer than ``timeout_s`` for the store: a read that cannot reach Redis in
time raises :class:`~protocol.errors.TaskStoreUnavailableError` (the client is told to retry).
A task, its events and its index entries live ``retention_s`` after its last write.
"""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis
from a2a.server.cluster import StoredTask, TaskVersion, VersionedTaskStore
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.id_generator import IDGenerator, IDGeneratorContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.types import ListTasksRequest, ListTasksResponse, Task, TaskState

from agents.scaffold.tasks.listing import list_tasks
from agents.scaffold.tasks.records import (
    ANONYMOUS,
    TaskRecords,
    reaching_redis,
    version_number,
)
from agents.scaffold.tasks.runners import RunnerHeartbeat, fail_orphan
from agents.scaffold.tasks.writer import COALESCE_S, TaskWriter
from registry.keys import RedisKeys
from registry.redis_client import text

#: How long a request waits for Redis before the store gives up (TASK_STORE_UNAVAILABLE).
TIMEOUT_S = 3.0
#: How long a task (events, index entries) is kept after its last write.
RETENTION_S = 24 * 3600.0
#: How long an id minted here is known to be new if no save follows (then Redis decides).
FRESH_TTL_S = 60.0
#: Call-context flag: the client learns of a new task before it ends, so store it at once.
ANNOUNCE_NEW_TASKS = "scriptorium.announce_new_tasks"


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
        #: The agent's task records in Redis (its client, keys and name).
        self.records = TaskRecords(redis, agent, keys or RedisKeys(), retention_s=retention_s)
        #: Longest a request waits for Redis through this store.
        self.timeout_s = timeout_s
        self._writer = TaskWriter(self.records, coalesce_s=coalesce_s, timeout_s=timeout_s)
        self._heartbeat = RunnerHeartbeat(self.records)
        self._owner_resolver = owner_resolver
        self._fresh: dict[str, float] = {}

    def owner_of(self, context: ServerCallContext) -> str:
        """Whose tasks a call may see and change."""
        return self._owner_resolver(context) or ANONYMOUS

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this process as a runner of the agent's tasks (refreshed until closed)."""
        await self._heartbeat.start()

    async def aclose(self) -> None:
        """Store everything pending, then withdraw the runner key (unfinished tasks orphan)."""
        await self._writer.flush()
        await self._heartbeat.stop()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every task this process writes has settled; False on timeout."""
        return await self._writer.drain(timeout_s)

    async def flush(self) -> None:
        """Store everything still pending, waiting for Redis at most ``timeout_s`` in all."""
        await self._writer.flush()

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
            # A cancel may come from a replica that does not run the task.
            await self._writer.settle(task.id)
            return TaskVersion(await self.write_over(task, event, owner))
        announce = bool(context.state.get(ANNOUNCE_NEW_TASKS))
        base = version_number(prev_version)
        version = await self._writer.save(task, event, owner, base=base, announce=announce)
        return TaskVersion(version)

    async def write_over(self, task: Task, event: Event | None, owner: str) -> int:
        """Store a final state written by a replica that may not run the task."""
        async with reaching_redis(self.timeout_s):
            return await self.records.write_over(task, event, owner)

    async def fail_orphan(self, task_id: str) -> bool:
        """Record FAILED for an unfinished task whose runner is gone; True if written."""
        return await fail_orphan(self.records, task_id, timeout_s=self.timeout_s)

    # -- reads -------------------------------------------------------------------------

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        """The task with its version, or None if unknown (or owned by someone else)."""
        owner = self.owner_of(context)
        if self._writer.holds(task_id):
            return self._writer.held(task_id, owner)
        if self._fresh.get(task_id, 0.0) > time.monotonic():
            return None  # minted here a moment ago: it exists nowhere yet
        async with reaching_redis(self.timeout_s):
            raw, version, stored_owner = await self.records.redis.hmget(
                self.records.task(task_id), ["t", "v", "o"]
            )
        if raw is None or stored_owner is None or text(stored_owner) != owner:
            return None
        return StoredTask(Task.FromString(raw), TaskVersion(int(version or 0)))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks of the caller, newest status first, filtered and paged in Redis."""
        owner = self.owner_of(context)
        async with reaching_redis(self.timeout_s):
            return await list_tasks(self.records, owner, params, self._writer.held)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        """Delete a task and its events; deleting an unknown task does nothing."""
        owner = self.owner_of(context)
        await self._writer.forget(task_id, owner)
        async with reaching_redis(self.timeout_s):
            key = self.records.task(task_id)
            stored_owner, context_id = await self.records.redis.hmget(key, ["o", "c"])
            if stored_owner is not None and text(stored_owner) != owner:
                return
            async with self.records.redis.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.delete(self.records.events(task_id))
                pipe.zrem(self.records.index(owner), task_id)
                if context_id:
                    pipe.zrem(self.records.index(owner, text(context_id)), task_id)
                await pipe.execute()


class _FreshIds(IDGenerator):
    """UUID task ids, each noted as new in the store that made this generator."""

    def __init__(self, store: RedisTaskStore) -> None:
        self._store = store

    def generate(self, context: IDGeneratorContext) -> str:
        task_id = str(uuid.uuid4())
        self._store._mark_fresh(task_id)
        return task_id
