"""Skill dispatch: one A2A executor that routes each request to its skill's handler.

A request names its skill in the message metadata (``{"skill": "search"}``); an agent with
a single skill also accepts requests that name none. Handlers receive a :class:`SkillCall`
and report through it: progress as status updates, results as artifacts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from a2a.helpers import get_data_parts, new_data_part, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Message, Part, Role, Task, TaskState
from pydantic import BaseModel, ValidationError

from agents.scaffold import metrics
from protocol.cards import SKILL_METADATA_KEY
from protocol.payloads import integral_numbers

log = logging.getLogger(__name__)
P = TypeVar("P", bound=BaseModel)


class SkillError(Exception):
    """Raised by a handler to fail its task with a message for the caller."""


class BadRequest(SkillError):
    """The request is malformed; the task is rejected and nothing is changed."""


class SkillCall:
    """One skill invocation: its input, and the ways to report back."""

    def __init__(self, skill: str, context: RequestContext, updater: TaskUpdater) -> None:
        self.skill = skill
        self.context = context
        self.updater = updater
        self._streams: set[str] = set()

    @property
    def task_id(self) -> str:
        return self.updater.task_id

    @property
    def context_id(self) -> str:
        return self.updater.context_id

    def data(self) -> Any:
        """The first data part of the request, or its text when it carries no data."""
        message = self.context.message
        if message is None:
            raise BadRequest("the request carries no message")
        items = get_data_parts(list(message.parts))
        if items:
            return integral_numbers(items[0])
        return self.context.get_user_input()

    def parse(self, model: type[P]) -> P:
        """The request's data part as ``model``; :class:`BadRequest` listing the problems."""
        data = self.data()
        if not isinstance(data, dict):
            raise BadRequest(
                f"skill {self.skill!r} takes a JSON object ({model.__name__}) as a data part"
            )
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise BadRequest(f"invalid {model.__name__}: {problems}") from exc

    async def progress(self, text: str, **data: Any) -> None:
        """Report progress as a working-state status update (text plus optional data)."""
        parts: list[Part] = [new_text_part(text)]
        if data:
            parts.append(new_data_part(data))
        await self.updater.update_status(TaskState.TASK_STATE_WORKING, message=self._message(parts))

    async def emit(self, payload: BaseModel | dict[str, Any], *, name: str = "result") -> None:
        """Add a data artifact to the task."""
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        await self.updater.add_artifact([new_data_part(data)], name=name)

    async def stream_text(
        self, artifact_id: str, text: str, *, name: str = "tokens", last: bool = False
    ) -> None:
        """Append ``text`` to a streamed text artifact (the first call creates it)."""
        first = artifact_id not in self._streams
        self._streams.add(artifact_id)
        await self.updater.add_artifact(
            [new_text_part(text)],
            artifact_id=artifact_id,
            name=name if first else None,
            append=not first,
            last_chunk=last,
        )

    def _message(self, parts: list[Part]) -> Message:
        return self.updater.new_agent_message(parts)


SkillHandler = Callable[[SkillCall], Awaitable[None]]


class SkillExecutor(AgentExecutor):
    """Routes requests to skill handlers, turning exceptions into failed tasks."""

    def __init__(self, agent: str, handlers: Mapping[str, SkillHandler]) -> None:
        self.agent = agent
        self.handlers = dict(handlers)
        self.in_flight = 0
        self._running: dict[str, asyncio.Task[Any]] = {}

    def _skill_of(self, context: RequestContext) -> str | None:
        named = context.metadata.get(SKILL_METADATA_KEY)
        if named is None and context.message is not None and context.message.metadata:
            named = dict(context.message.metadata).get(SKILL_METADATA_KEY)
        if named is None and len(self.handlers) == 1:
            return next(iter(self.handlers))
        return str(named) if named is not None else None

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the named skill's handler for one request."""
        task = context.current_task
        if task is None:
            if context.message is None:
                raise BadRequest("the request carries no message")
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        skill = self._skill_of(context)
        if skill is None or skill not in self.handlers:
            known = ", ".join(sorted(self.handlers))
            reason = (
                f"unknown skill {skill!r}" if skill else "the request names no skill"
            ) + f"; set message metadata {{'{SKILL_METADATA_KEY}': ...}} to one of: {known}"
            await updater.reject(updater.new_agent_message([new_text_part(reason)]))
            metrics.TASKS.labels(self.agent, skill or "", "rejected").inc()
            return
        await self._run(skill, SkillCall(skill, context, updater), task)

    async def _run(self, skill: str, call: SkillCall, task: Task) -> None:
        started = time.perf_counter()
        self.in_flight += 1
        metrics.IN_FLIGHT.labels(self.agent).inc()
        outcome = "completed"
        try:
            await call.updater.start_work()
            await self.handlers[skill](call)
            await call.updater.complete()
        except BadRequest as exc:
            outcome = "rejected"
            await call.updater.reject(call.updater.new_agent_message([new_text_part(str(exc))]))
        except SkillError as exc:
            outcome = "failed"
            await call.updater.failed(call.updater.new_agent_message([new_text_part(str(exc))]))
        except asyncio.CancelledError:
            outcome = "canceled"
            raise
        except Exception as exc:
            outcome = "failed"
            log.exception("skill crashed", extra={"skill": skill, "task_id": task.id})
            text = f"skill {skill!r} crashed: {type(exc).__name__}: {exc}. See the agent's log."
            await call.updater.failed(call.updater.new_agent_message([new_text_part(text)]))
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.labels(self.agent).dec()
            metrics.TASKS.labels(self.agent, skill, outcome).inc()
            metrics.TASK_SECONDS.labels(self.agent, skill).observe(time.perf_counter() - started)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Mark the task canceled (the SDK has already cancelled the running handler)."""
        task = context.current_task
        if task is None or context.task_id is None:
            return
        updater = TaskUpdater(event_queue, context.task_id, task.context_id)
        await updater.cancel(
            Message(
                role=Role.ROLE_AGENT,
                message_id=f"{context.task_id}-cancel",
                parts=[new_text_part("canceled at the caller's request")],
            )
        )
