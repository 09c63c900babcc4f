"""ListTasks in Redis: a page of one owner's tasks, newest status first, from the index.

The index of the caller's tasks (of one context, with ``context_id``) is read one page at a
time from the page token's position (ZREVRANGEBYSCORE ... LIMIT); only the page's tasks are
fetched. ``total_size`` is a ZCOUNT; a ``status`` filter reads the state field (a few bytes)
of each task in the range to count and pick, snapshots still only for the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from a2a.server.cluster import StoredTask
from a2a.types import ListTasksRequest, ListTasksResponse, Task
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import (
    ListTasksCursor,
    decode_list_tasks_cursor,
    encode_list_tasks_cursor,
)

from agents.scaffold.tasks.records import TaskRecords
from registry.redis_client import text

#: Index entries read per round trip while paging.
LIST_BATCH = 256
_Scored = list[tuple[bytes, float]]
#: (task id, index score in µs)
_Entry = tuple[str, int]
#: ``(task id, owner)`` to the newer copy this process holds of the task, if any.
Held = Callable[[str, str], StoredTask | None]


async def list_tasks(
    records: TaskRecords, owner: str, params: ListTasksRequest, held: Held
) -> ListTasksResponse:
    """A page of ``owner``'s tasks as ``params`` asks (the copies ``held`` returns win)."""
    page_size = params.page_size or DEFAULT_LIST_TASKS_PAGE_SIZE
    index = records.index(owner, params.context_id)
    low = records.oldest_score()
    if params.HasField("status_timestamp_after"):
        low = max(low, params.status_timestamp_after.ToMicroseconds())
    cursor: tuple[int, str] | None = None
    if params.page_token:
        decoded = decode_list_tasks_cursor(params.page_token)
        if decoded is None or decoded.timestamp_ns is None:
            raise InvalidParamsError(f"Invalid page token: {params.page_token}")
        cursor = (decoded.timestamp_ns // 1000, decoded.task_id)
    if params.status:
        total, entries = await _matching(records, index, low, cursor, params.status, page_size)
    else:
        total = int(await records.redis.zcount(index, low, "+inf"))
        entries = await _entries(records, index, low, cursor, page_size + 1)
    page = [task_id for task_id, _ in entries[:page_size]]
    tasks = await _snapshots(records, owner, page, held)
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
    records: TaskRecords, index: str, low: int, cursor: tuple[int, str] | None, count: int
) -> list[_Entry]:
    """Up to ``count`` (task id, score) of ``index``, newest first, after ``cursor``."""
    high: int | str = cursor[0] if cursor is not None else "+inf"
    found: list[_Entry] = []
    offset = 0
    batch = count + 8  # a few to skip: entries of the cursor's own time up to its task
    while len(found) < count:
        rows = cast(
            _Scored,
            await records.redis.zrevrangebyscore(
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
    records: TaskRecords,
    index: str,
    low: int,
    cursor: tuple[int, str] | None,
    state: int,
    page_size: int,
) -> tuple[int, list[_Entry]]:
    """How many tasks of ``index`` are in ``state``, and the page of them after ``cursor``
    (one more than the page, to tell whether another page follows)."""
    total = 0
    page: list[_Entry] = []
    offset = 0
    while True:
        rows = cast(
            _Scored,
            await records.redis.zrevrangebyscore(
                index, "+inf", low, start=offset, num=LIST_BATCH, withscores=True
            ),
        )
        entries = [(text(member), int(score)) for member, score in rows]
        async with records.redis.pipeline(transaction=False) as pipe:
            for task_id, _ in entries:
                pipe.hget(records.task(task_id), "s")
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


async def _snapshots(
    records: TaskRecords, owner: str, task_ids: list[str], held: Held
) -> list[Task]:
    """The tasks ``task_ids`` of ``owner`` in that order (newer ones held here win)."""
    async with records.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hmget(records.task(task_id), ["t", "o"])
        rows = await pipe.execute() if task_ids else []
    tasks: list[Task] = []
    for task_id, (raw, stored_owner) in zip(task_ids, rows, strict=True):
        stored = held(task_id, owner)
        if stored is not None:
            tasks.append(stored.task)
        elif raw is not None and stored_owner is not None and text(stored_owner) == owner:
            tasks.append(Task.FromString(raw))
    return tasks
