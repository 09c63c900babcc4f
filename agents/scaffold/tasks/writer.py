"""Writes of the tasks this process runs: ordered, coalesced, retried while Redis is away.

Intermediate states (working, a streamed artifact chunk) wait up to ``coalesce_s`` and land
together in one script call; final and interrupted states are durable before ``save``
returns. A new task whose client hears of it before it ends (a stream,
``return_immediately``) is sent at once, not awaited, so any replica can answer for it; a
plain SendMessage costs one write. A write that another replica got in first (a cancel) is
noticed at the coalesced flush and reported on the running task's next write, which is how
the SDK learns to stop.

Redis away: a settled state that cannot be stored within ``timeout_s`` raises
:class:`~protocol.errors.TaskStoreUnavailableError` (the client is told to retry); the task
is then recorded FAILED here and in Redis as soon as it is back, so nobody who heard of it
waits for it forever. Intermediate states keep being retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from a2a.server.cluster import ConcurrentTaskModificationError, StoredTask, TaskVersion
from a2a.server.events.event_queue import Event
from a2a.types import Task
from redis.exceptions import RedisError

from agents.scaffold.busy import Busy
from agents.scaffold.tasks.records import TaskRecords, event_bytes, failed, loggable
from protocol.errors import TaskStoreUnavailableError, task_store_unavailable
from protocol.streams import SETTLED_STATES, TERMINAL_STATES

#: How long an intermediate state may wait to be stored with the states after it.
COALESCE_S = 0.25
RETRY_DELAY_S = 0.5
#: Longest pause between background attempts to store a task while Redis is away.
RETRY_MAX_DELAY_S = 5.0
#: What a task that could not be stored in time ends with.
STORE_UNREACHABLE = (
    "the task store (Redis) was unreachable when this task ended, so its result was not "
    "kept; send the request again"
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


class TaskWriter:
    """The tasks this process is writing, each stored in order, one writer at a time."""

    def __init__(self, records: TaskRecords, *, coalesce_s: float, timeout_s: float) -> None:
        self._records = records
        self._coalesce_s = coalesce_s
        self._timeout_s = timeout_s
        self._slots: dict[str, _Slot] = {}
        self._unsettled = Busy()

    def held(self, task_id: str, owner: str) -> StoredTask | None:
        """A copy of ``owner``'s task as this process last wrote it, if it holds it."""
        slot = self._slots.get(task_id)
        if slot is None or slot.conflicted or slot.owner != owner:
            return None
        copy = Task()
        copy.CopyFrom(slot.task)  # the caller may trim it (artifacts, history)
        return StoredTask(copy, TaskVersion(slot.version))

    def holds(self, task_id: str) -> bool:
        """Whether this process writes the task now (it answers for it, owner or not)."""
        slot = self._slots.get(task_id)
        return slot is not None and not slot.conflicted

    async def save(
        self, task: Task, event: Event | None, owner: str, *, base: int, announce: bool
    ) -> int:
        """Write ``task`` over version ``base`` (and log ``event``); the new version.

        ``announce``: the client hears of a new task before it ends, so it is stored at once.
        """
        slot = self._slots.get(task.id)
        if slot is not None and (slot.conflicted or slot.owner != owner):
            self._drop(task.id)
            raise ConcurrentTaskModificationError(task.id)
        if slot is None:
            slot = self._slots[task.id] = _Slot(owner, Task(), version=base, stored=base)
        elif slot.version != base:
            raise ConcurrentTaskModificationError(task.id)
        version = slot.version + 1
        if (logged := loggable(event, first=base == 0)) is not None:
            slot.events.append((version, event_bytes(logged, version)))
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
        elif base == 0 and announce:
            # The client hears of this task before it ends (a stream, return_immediately) and
            # may ask another replica about it: store it straight away (not awaited).
            slot.writer = asyncio.create_task(self._flush(task.id, slot, once=True))
        elif slot.timer is None and (slot.writer is None or slot.writer.done()):
            loop = asyncio.get_running_loop()
            slot.timer = loop.call_later(self._coalesce_s, self._flush_later, task.id, slot)
        return version

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
                        ok, current = await self._records.write(
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
        ended, update = failed(slot.task, STORE_UNREACHABLE)
        slot.version += 1
        slot.events = [(slot.version, event_bytes(update, slot.version))]
        slot.task = ended
        self._note_state(ended)
        log.warning("task failed: the task store is unreachable", extra={"task_id": task_id})
        self._retry_later(task_id, slot)

    async def settle(self, task_id: str) -> None:
        """Store what is pending of a task and stop writing it (another write follows)."""
        slot = self._slots.get(task_id)
        if slot is None:
            return
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        await self._flush(task_id, slot)
        self._drop(task_id)

    async def forget(self, task_id: str, owner: str) -> None:
        """Stop writing ``owner``'s task (it is being deleted)."""
        slot = self._slots.get(task_id)
        if slot is None or slot.owner != owner:
            return
        self._drop(task_id)
        if slot.writer is not None:
            slot.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.writer

    def _note_state(self, task: Task) -> None:
        if task.status.state in SETTLED_STATES:
            self._unsettled.end(task.id)
        else:
            self._unsettled.begin(task.id)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every task this process writes has settled; False on timeout."""
        return await self._unsettled.drain(timeout_s)

    def _drop(self, task_id: str) -> None:
        self._unsettled.end(task_id)
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
