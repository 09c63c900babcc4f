"""Which processes run an agent's tasks, and failing the tasks of one that is gone.

A process announces itself with a runner key refreshed every few seconds; a task whose
runner key is gone while the task is unfinished was orphaned by a crash, and
:func:`fail_orphan` records that as FAILED so no subscriber waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from a2a.server.cluster import ConcurrentTaskModificationError
from a2a.types import Task
from redis.exceptions import RedisError

from agents.scaffold.tasks.records import TaskRecords, failed, reaching_redis
from protocol.streams import ORPHANED, TERMINAL_STATES
from registry.redis_client import text

RUNNER_TTL_S = 6.0
RUNNER_REFRESH_S = 2.0
log = logging.getLogger(__name__)


class RunnerHeartbeat:
    """This process's runner key: set on start, refreshed until stopped, then removed."""

    def __init__(self, records: TaskRecords) -> None:
        self._records = records
        self._key = records.keys.task_runner(records.agent, records.runner_id)
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Announce this process as a runner of the agent's tasks (refreshed until stopped)."""
        await self._announce()
        self._refresher = asyncio.create_task(self._keep_announcing(), name="task-runner")

    async def stop(self) -> None:
        """Stop refreshing and withdraw the runner key (this process's unfinished tasks orphan)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        with contextlib.suppress(RedisError, OSError):
            await self._records.redis.delete(self._key)

    async def _announce(self) -> None:
        await self._records.redis.set(self._key, b"1", px=int(RUNNER_TTL_S * 1000))

    async def _keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(RUNNER_REFRESH_S)
            try:
                await self._announce()
            except (RedisError, OSError) as exc:
                log.warning("task runner heartbeat failed", extra={"error": str(exc)})


async def runner_alive(records: TaskRecords, runner_id: str) -> bool:
    """Whether the process ``runner_id`` still runs the agent's tasks."""
    if runner_id == records.runner_id:
        return True
    return bool(await records.redis.exists(records.keys.task_runner(records.agent, runner_id)))


async def fail_orphan(records: TaskRecords, task_id: str, *, timeout_s: float) -> bool:
    """Record FAILED for an unfinished task whose runner is gone; True if written."""
    async with reaching_redis(timeout_s):
        raw, owner, runner = await records.redis.hmget(records.task(task_id), ["t", "o", "r"])
        if raw is None or owner is None or runner is None:
            return False
        task = Task.FromString(raw)
        if task.status.state in TERMINAL_STATES or await runner_alive(records, text(runner)):
            return False
        ended, update = failed(task, ORPHANED)
        try:
            await records.write_over(ended, update, text(owner))
        except ConcurrentTaskModificationError:
            return False
    log.warning("orphaned task failed", extra={"task_id": task_id, "runner": text(runner)})
    return True
