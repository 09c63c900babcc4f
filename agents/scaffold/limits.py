"""What one request may ask of an agent: message limits and the concurrency limit.

Checked by the request handler before a task exists, on every transport:

- every part carries content (text, raw, url or data): a part of a kind the protocol does
  not know parses as an empty part, since the SDK ignores unknown fields, and is refused;
- at most ``max_parts`` parts per message;
- ids (``messageId``, ``contextId``, ``taskId``, ``referenceTaskIds``) are at most
  :data:`MAX_ID_LENGTH` characters of :data:`ID_ALPHABET` — an id ends up in Redis keys and
  stored tasks;
- at most ``max_in_flight`` tasks run at once: SendMessage beyond that is answered
  :class:`~protocol.errors.AgentBusyError` with a retry hint instead of queueing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.types import Message
from a2a.utils.errors import InvalidParamsError

from protocol.errors import agent_busy

MAX_ID_LENGTH = 128
#: Characters an id may hold (the first one alphanumeric): UUIDs, hex digests, registry
#: session ids, ``name@host:port``-style ids all fit.
ID_ALPHABET = "A-Z a-z 0-9 and . _ - : @ + = ~"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=~-]*")
#: Call-context key of a request's admission ticket (see :class:`Admission`).
ADMISSION_KEY = "scriptorium.admission"


@dataclass(frozen=True)
class RequestLimits:
    """The limits of :func:`check_message` and the agent's concurrency limit."""

    max_parts: int = 32
    max_in_flight: int | None = None
    retry_after_s: float = 2.0


def check_id(name: str, value: str) -> None:
    """Refuse (InvalidParams) an id that is too long or has characters outside the alphabet."""
    if len(value) > MAX_ID_LENGTH:
        raise InvalidParamsError(
            message=f"{name} is {len(value)} characters long; ids have at most {MAX_ID_LENGTH}"
        )
    if not _ID.fullmatch(value):
        raise InvalidParamsError(
            message=f"{name} {value[:40]!r} has characters outside the id alphabet "
            f"({ID_ALPHABET}; first one a letter or digit)"
        )


def check_message(message: Message, limits: RequestLimits) -> None:
    """Refuse (InvalidParams) a message over the limits or with a part of no known kind."""
    if len(message.parts) > limits.max_parts:
        raise InvalidParamsError(
            message=f"message has {len(message.parts)} parts; at most {limits.max_parts} are "
            "taken (SCRIPTORIUM_MAX_MESSAGE_PARTS)"
        )
    for i, part in enumerate(message.parts):
        if part.WhichOneof("content") is None:
            raise InvalidParamsError(
                message=f"message.parts[{i}] carries no content: a part holds one of text, "
                "raw, url or data (fields of other kinds are ignored)"
            )
    if message.message_id:  # a missing one is the SDK's to refuse
        check_id("messageId", message.message_id)
    if message.context_id:
        check_id("contextId", message.context_id)
    if message.task_id:
        check_id("taskId", message.task_id)
    for i, task_id in enumerate(message.reference_task_ids):
        check_id(f"referenceTaskIds[{i}]", task_id)


@dataclass
class _Ticket:
    started: bool = False
    released: bool = False


@dataclass
class Admission:
    """Counts the tasks an agent runs (and those admitted but not started yet) against its
    limit; one more is refused with a retry hint.

    A request is admitted (:meth:`admit`) before its task is set up, and its ticket is
    turned into a running task when the executor starts (:meth:`started`), so requests
    arriving together cannot all slip under the limit.
    """

    limit: int | None
    retry_after_s: float = 2.0
    running: int = 0
    waiting: int = field(default=0)

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting

    def admit(self, context: ServerCallContext) -> None:
        """Take a place for this request's task, or raise AgentBusyError."""
        if self.limit is not None and self.in_flight >= self.limit:
            raise agent_busy(self.in_flight, self.retry_after_s)
        self.waiting += 1
        context.state[ADMISSION_KEY] = _Ticket()

    def started(self, context: ServerCallContext | None) -> None:
        """The request's task starts running (one more running, one fewer waiting)."""
        ticket = _ticket(context)
        if ticket is not None and not ticket.started:
            ticket.started = True
            if not ticket.released:
                ticket.released = True
                self.waiting -= 1
        self.running += 1

    def finished(self) -> None:
        self.running -= 1

    def release(self, context: ServerCallContext) -> None:
        """The request is over: give back its place if its task never started."""
        ticket = _ticket(context)
        if ticket is not None and not ticket.released:
            ticket.released = True
            self.waiting -= 1


def _ticket(context: ServerCallContext | None) -> _Ticket | None:
    ticket: Any = context.state.get(ADMISSION_KEY) if context is not None else None
    return ticket if isinstance(ticket, _Ticket) else None


class AdmittedExecutor(AgentExecutor):
    """An executor that tells its :class:`Admission` when each task runs and ends."""

    def __init__(self, inner: AgentExecutor, admission: Admission) -> None:
        self.inner = inner
        self.admission = admission

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.admission.started(context.call_context)
        try:
            await self.inner.execute(context, event_queue)
        finally:
            self.admission.finished()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await self.inner.cancel(context, event_queue)
