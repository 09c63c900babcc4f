"""Skill dispatch: one A2A executor that routes each request to its skill's handler.

A request names its skill in the metadata (``{"skill": "search"}``, of the message or of the
request); one that names none goes to the agent's default skill (its card's primary skill,
or its only one) -- that is how a generic A2A client's plain text message is served.
Before anything runs, every part whose media type the skill does not take is refused with
ContentTypeNotSupported (:class:`SkillContextBuilder`). Handlers receive a :class:`SkillCall`
and report through it: progress as status updates, results as artifacts.

Each skill runs inside an ``invoke_agent {agent}`` SERVER span (:mod:`protocol.telemetry`)
whose parent is the caller's span, read from the request's ``traceparent`` (HTTP header or
gRPC metadata, both in the call context's ``state["headers"]``); the handler's own calls to
other agents are its children.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from a2a.helpers import get_data_parts, new_data_part, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import (
    AgentExecutor,
    RequestContext,
    SimpleRequestContextBuilder,
)
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.id_generator import IDGenerator
from a2a.server.tasks import TaskUpdater
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, Task, TaskState
from a2a.utils.errors import ContentTypeNotSupportedError
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel, ValidationError

from agents.scaffold import metrics
from agents.scaffold.busy import Busy
from protocol import telemetry
from protocol.auth import OPERATOR, roles_of
from protocol.cards import SKILL_METADATA_KEY, accepted_input_modes
from protocol.errors import PermissionDeniedError
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

    def parse(self, model: type[P], *, from_text: Callable[[str], P] | None = None) -> P:
        """The request as ``model``: its data part, or its text through ``from_text``.

        A skill that takes text passes the one small function turning text into its request
        (``lambda text: SearchRequest(query=text)``); without it a text message is rejected
        naming the data part the skill needs. :class:`BadRequest` lists any problems.
        """
        data = self.data()
        try:
            if isinstance(data, str) and from_text is not None:
                return from_text(data.strip())
            if isinstance(data, dict):
                return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise BadRequest(f"invalid {model.__name__}: {problems}") from exc
        sent = "text" if isinstance(data, str) else f"a JSON {type(data).__name__}"
        raise BadRequest(
            f"skill {self.skill!r} takes a data part (application/json) holding "
            f"{request_shape(model)}, not {sent}; name the skill in the message metadata "
            f'{{"{SKILL_METADATA_KEY}": "{self.skill}"}}'
        )

    async def progress(self, text: str, **data: Any) -> None:
        """Report progress as a working-state status update (text plus optional data)."""
        parts: list[Part] = [new_text_part(text)]
        if data:
            parts.append(new_data_part(data))
        await self.updater.update_status(TaskState.TASK_STATE_WORKING, message=self._message(parts))

    async def emit(self, payload: BaseModel | dict[str, Any], *, name: str = "result") -> None:
        """Add a data artifact to the task."""
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        # One whole artifact: marked last, so generic clients (ADK) take it as final.
        await self.updater.add_artifact([new_data_part(data)], name=name, last_chunk=True)

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
#: The A2A state a task ends in, per outcome of its handler (the span's ``a2a.task.state``).
FINAL_STATES = {
    "completed": TaskState.Name(TaskState.TASK_STATE_COMPLETED),
    "rejected": TaskState.Name(TaskState.TASK_STATE_REJECTED),
    "failed": TaskState.Name(TaskState.TASK_STATE_FAILED),
    "canceled": TaskState.Name(TaskState.TASK_STATE_CANCELED),
}


def request_shape(model: type[BaseModel]) -> str:
    """``model``'s JSON shape in one line: required fields, optional ones, nested models."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})

    def kind(prop: dict[str, Any]) -> str:
        if "$ref" in prop:
            return str(prop["$ref"]).rsplit("/", 1)[-1]
        if "enum" in prop:
            return " | ".join(json.dumps(value) for value in prop["enum"])
        if "anyOf" in prop:
            return " | ".join(kind(item) for item in prop["anyOf"])
        if prop.get("type") == "array":
            return f"[{kind(prop.get('items', {}))}, ...]"
        return str(prop.get("type", "any"))

    def required(of: dict[str, Any]) -> str:
        props = of.get("properties", {})
        return "{" + ", ".join(f'"{n}": {kind(props[n])}' for n in of.get("required", [])) + "}"

    props = schema.get("properties", {})
    needed = schema.get("required", [])
    optional = [n for n in props if n not in needed]
    article = "an" if model.__name__[0] in "AEIOU" else "a"
    shape = f"{article} {model.__name__} {required(schema)}"
    if optional:
        shape += f" (optional: {', '.join(optional)})"
    cited = json.dumps([props[n] for n in needed])
    nested = [n for n in defs if f'"#/$defs/{n}"' in cited]
    return shape + "".join(f", {name} being {required(defs[name])}" for name in nested)


def named_skill(metadata: Mapping[str, Any], message: Message | None) -> str | None:
    """The skill a request names: in the request's metadata, else in its message's."""
    named = metadata.get(SKILL_METADATA_KEY)
    if named is None and message is not None and message.metadata:
        named = dict(message.metadata).get(SKILL_METADATA_KEY)
    return str(named) if named is not None else None


def request_headers(context: RequestContext) -> Mapping[str, Any]:
    """The request's HTTP headers, or its gRPC metadata (the gRPC context builder puts it in
    the same place), with lower-case names."""
    call = context.call_context
    headers = call.state.get("headers") if call is not None else None
    return headers if isinstance(headers, Mapping) else {}


class SkillExecutor(AgentExecutor):
    """Routes requests to skill handlers, turning exceptions into failed tasks.

    ``default_skill`` (the card's :attr:`~protocol.cards.CardSpec.default_skill`) serves
    requests that name no skill.
    """

    def __init__(
        self,
        agent: str,
        handlers: Mapping[str, SkillHandler],
        *,
        default_skill: str | None = None,
    ) -> None:
        if default_skill is not None and default_skill not in handlers:
            raise ValueError(f"default skill {default_skill!r} has no handler")
        self.agent = agent
        self.handlers = dict(handlers)
        self.default_skill = default_skill
        self._busy = Busy()
        self._running: dict[str, asyncio.Task[Any]] = {}

    @property
    def in_flight(self) -> int:
        """Skills running now."""
        return len(self._busy)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no skill runs (at most ``timeout_s``); True if none is left running."""
        return await self._busy.drain(timeout_s)

    def skill_for(self, metadata: Mapping[str, Any], message: Message | None) -> str | None:
        """The skill a request is for: the one it names, else the default skill."""
        return named_skill(metadata, message) or self.default_skill

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Run the named skill's handler for one request."""
        task = context.current_task
        if task is None:
            if context.message is None:
                raise BadRequest("the request carries no message")
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        skill = self.skill_for(context.metadata, context.message)
        with telemetry.tracer().start_as_current_span(
            f"invoke_agent {self.agent}",
            context=telemetry.extract(request_headers(context)),
            kind=SpanKind.SERVER,
            attributes={
                telemetry.OPERATION: "invoke_agent",
                telemetry.AGENT_NAME: self.agent,
                telemetry.SKILL: skill or "",
                telemetry.TASK_ID: task.id,
                telemetry.CONVERSATION_ID: task.context_id,
            },
        ) as span:
            if skill is None or skill not in self.handlers:
                known = ", ".join(sorted(self.handlers))
                reason = (
                    f"unknown skill {skill!r}" if skill else "the request names no skill"
                ) + f"; set message metadata {{'{SKILL_METADATA_KEY}': ...}} to one of: {known}"
                await updater.reject(updater.new_agent_message([new_text_part(reason)]))
                metrics.TASKS.labels(self.agent, skill or "", "rejected").inc()
                outcome = "rejected"
            else:
                try:
                    outcome = await self._run(skill, SkillCall(skill, context, updater), task)
                except asyncio.CancelledError:
                    telemetry.annotate({telemetry.TASK_STATE: FINAL_STATES["canceled"]}, span)
                    raise
            if span.is_recording():
                span.set_attribute(telemetry.TASK_STATE, FINAL_STATES[outcome])
                if outcome == "failed":
                    span.set_status(StatusCode.ERROR, "the skill failed")

    async def _run(self, skill: str, call: SkillCall, task: Task) -> str:
        """Run the handler; returns the outcome (completed, rejected, failed)."""
        started = time.perf_counter()
        self._busy.begin(call)
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
            trace.get_current_span().record_exception(exc)
            text = f"skill {skill!r} crashed: {type(exc).__name__}: {exc}. See the agent's log."
            await call.updater.failed(call.updater.new_agent_message([new_text_part(text)]))
        finally:
            self._busy.end(call)
            metrics.IN_FLIGHT.labels(self.agent).dec()
            metrics.TASKS.labels(self.agent, skill, outcome).inc()
            metrics.TASK_SECONDS.labels(self.agent, skill).observe(time.perf_counter() - started)
        return outcome

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


def check_media_types(message: Message, skill: str | None, card: AgentCard) -> None:
    """Refuse (ContentTypeNotSupported) a part whose stated media type ``skill`` does not take.

    The SDK's rule otherwise: a part stating no media type is not checked, and a card that
    declares no modes takes anything. An unknown skill is checked against every skill's modes.
    """
    accepted = accepted_input_modes(card, skill)
    for part in message.parts:
        media_type = part.media_type.split(";")[0].strip().lower()
        if accepted and media_type and media_type not in accepted:
            refused = (
                f"skill {skill!r} of {card.name} does not take {part.media_type}"
                if skill in {s.id for s in card.skills}
                else f"no skill of {card.name} takes {part.media_type}"
            )
            raise ContentTypeNotSupportedError(
                message=f"{refused}; send one of: {', '.join(sorted(accepted))}"
            )


class SkillContextBuilder(SimpleRequestContextBuilder):
    """Builds each request's context once its parts passed :func:`check_media_types`.

    The SDK's own check (``validate_input_modes``) accepts a media type that any skill takes;
    a request is served by one skill, so this checks the parts against that skill's modes,
    before a task exists.
    """

    def __init__(
        self,
        executor: SkillExecutor,
        card: AgentCard,
        *,
        task_id_generator: IDGenerator | None = None,
        operator_skills: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(task_id_generator=task_id_generator)
        self._executor = executor
        self._card = card
        self._operator_skills = operator_skills

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        """The SDK's hook (hence its name): check the caller may use the skill and the
        message's media types, then build the ``RequestContext`` as the SDK does."""
        if params is not None:
            metadata = json_format.MessageToDict(params.metadata)
            skill = self._executor.skill_for(metadata, params.message)
            if skill in self._operator_skills and OPERATOR not in roles_of(context.state):
                raise PermissionDeniedError(
                    message=f"skill {skill!r} of {self._card.name} is operator-only and "
                    f"{context.user.user_name or 'this caller'} has no operator role; call with "
                    "SCRIPTORIUM_TOKEN, a key of a subject in SCRIPTORIUM_OPERATORS, or a JWT "
                    'with roles ["operator"]'
                )
            check_media_types(params.message, skill, self._card)
        return await super().build(context, params, task_id, context_id, task)
