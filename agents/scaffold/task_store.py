"""An A2A task store in Redis: tasks survive a restart and every replica sees them.

A sibling of the SDK's ``InMemoryTaskStore`` and ``DatabaseTaskStore`` behind the same
four-method ``TaskStore`` contract. Tasks are stored as protobuf bytes, one key each, with a
per-owner sorted set (score = last status update in ms) for listing. Both expire after
``retention_s`` so Redis does not grow without bound.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import OwnerResolver, resolve_user_scope
from a2a.server.tasks.task_store import TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    encode_list_tasks_cursor,
)

from registry.keys import RedisKeys

ANONYMOUS = "anonymous"


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

    def _owner(self, context: ServerCallContext) -> str:
        return self._owner_resolver(context) or ANONYMOUS

    async def save(self, task: Task, context: ServerCallContext) -> None:
        """Save or update a task (one round trip)."""
        owner = self._owner(context)
        score = _sort_key(task)[1] // 1_000_000
        index = self._keys.task_index(self._agent, owner)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.task(self._agent, owner, task.id), task.SerializeToString())
            pipe.pexpire(self._keys.task(self._agent, owner, task.id), self._retention_ms)
            pipe.zadd(index, {task.id: score})
            pipe.pexpire(index, self._retention_ms)
            await pipe.execute()

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        """The task, or None if unknown (or owned by someone else)."""
        raw = await self._redis.get(self._keys.task(self._agent, self._owner(context), task_id))
        return None if raw is None else Task.FromString(raw)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks of the caller, newest update first, filtered and paginated like the SDK's."""
        owner = self._owner(context)
        ids = await self._redis.zrevrange(self._keys.task_index(self._agent, owner), 0, -1)
        raws = await self._redis.mget(
            [self._keys.task(self._agent, owner, i.decode()) for i in ids]
        )
        tasks = [Task.FromString(raw) for raw in raws if raw is not None]
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
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.task(self._agent, owner, task_id))
            pipe.zrem(self._keys.task_index(self._agent, owner), task_id)
            await pipe.execute()
