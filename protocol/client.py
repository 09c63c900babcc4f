"""Calling agents over A2A: an httpx client with timeouts and auth, and skill calls.

Create one :func:`http_client` per process and one A2A ``Client`` per agent (by card, so
no card fetch happens per call), then use :func:`call_skill`.

Every call made through :func:`open_client`'s clients carries the active W3C trace context
(``traceparent``/``tracestate``: HTTP headers on JSON-RPC and HTTP+JSON, metadata on gRPC),
and :func:`call_skill` wraps each call in an ``invoke_agent {agent}`` CLIENT span
(:mod:`protocol.telemetry`), so the callee's span is its child.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import grpc
import httpx
from a2a.client import A2ACardResolver, Client, ClientCallContext, ClientConfig, create_client
from a2a.client.errors import A2AClientTimeoutError
from a2a.client.interceptors import AfterArgs, BeforeArgs, ClientCallInterceptor
from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.server.tasks.task_manager import append_artifact_to_task
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import TaskNotFoundError
from google.protobuf.struct_pb2 import Struct
from opentelemetry.trace import Span, SpanKind, StatusCode
from pydantic import BaseModel

from protocol import telemetry
from protocol.cards import SKILL_METADATA_KEY
from protocol.errors import register as register_our_errors
from protocol.signing import TrustedKeys, verify_card
from protocol.streams import (
    ORPHANED,
    SETTLED_STATES,
    TERMINAL_STATES,
    event_sequence,
    resume_parameters,
)

log = logging.getLogger(__name__)
register_our_errors()  # the client maps our error codes (busy, permission denied) back
A2A_VERSION_HEADER = "A2A-Version"
#: Transports our client speaks, most preferred first.
TRANSPORTS = ("JSONRPC", "HTTP+JSON", "GRPC")

UpdateCallback = Callable[[StreamResponse, Task], Awaitable[None]]
#: Where to resume a broken-off stream: a client of the same agent (maybe another replica).
Reconnect = Callable[[], Awaitable[Client]]
#: How many times one call resumes its stream, and the first pause between attempts.
RESUME_ATTEMPTS = 6
RESUME_BACKOFF_S = 0.1
M = TypeVar("M", bound=BaseModel)
#: The agent each client made by :func:`open_client` talks to (names its spans).
_AGENT_NAMES: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


class SkillFailed(RuntimeError):
    """A skill call ended in a state other than completed; carries the final task.

    ``reason`` is the agent's own message; ``rejected`` says the request itself was refused.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        state = TaskState.Name(task.status.state)
        message = get_message_text(task.status.message) if task.status.HasField("message") else ""
        self.reason = message or "no reason given"
        self.rejected = task.status.state == TaskState.TASK_STATE_REJECTED
        #: The instance running the task died: another one may do it.
        self.orphaned = ORPHANED in self.reason
        super().__init__(f"task {task.id} ended {state}: {self.reason}")


class NotDelivered(ConnectionError):
    """A request that reached no agent: no connection was made, so no task exists.

    Sending it again, to this agent or another instance, cannot duplicate work.
    """


def http_client(
    *,
    connect_timeout_s: float = 3.0,
    request_timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client for A2A calls: timeouts always on, optional auth headers."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
        headers={A2A_VERSION_HEADER: "1.0", **(headers or {})},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )


async def open_client(
    agent: str | AgentCard,
    http: httpx.AsyncClient,
    *,
    streaming: bool = True,
    transport: str | None = None,
    trusted_keys: TrustedKeys | None = None,
) -> Client:
    """An A2A client for an agent given by base URL (fetches its card) or by card.

    It speaks JSON-RPC, else HTTP+JSON, else gRPC, whatever the card prefers; ``transport``
    (``"JSONRPC"``, ``"HTTP+JSON"`` or ``"GRPC"``) insists on one. gRPC calls carry the
    ``http`` client's Authorization header, and its timeout (unary calls; streams follow
    their task). With ``trusted_keys`` the card must carry a valid signature by one of
    them, else :class:`~protocol.signing.CardSignatureError` (nothing is called).
    """
    config = ClientConfig(
        streaming=streaming,
        httpx_client=http,
        supported_protocol_bindings=[transport] if transport else list(TRANSPORTS),
        use_client_preference=True,
        grpc_channel_factory=lambda url: grpc_channel(url, http),
    )
    card = (
        agent
        if isinstance(agent, AgentCard)
        else await A2ACardResolver(http, agent).get_agent_card()
    )
    if trusted_keys is not None:
        verify_card(card, trusted_keys)
    client = await create_client(
        card, client_config=config, interceptors=[TraceContextPropagation()]
    )
    _AGENT_NAMES[client] = card.name
    return client


class TraceContextPropagation(ClientCallInterceptor):
    """Sends the active trace context with every call, whatever the transport: the SDK turns
    service parameters into HTTP headers (JSON-RPC, HTTP+JSON) or gRPC metadata."""

    async def before(self, args: BeforeArgs) -> None:
        carrier = telemetry.inject()
        if not carrier:
            return  # no active trace: nothing to send
        context = args.context or ClientCallContext()
        args.context = context.model_copy(
            update={"service_parameters": {**(context.service_parameters or {}), **carrier}}
        )

    async def after(self, args: AfterArgs) -> None:
        del args


def grpc_channel(url: str, http: httpx.AsyncClient) -> grpc.aio.Channel:
    """A gRPC channel to a card's ``http(s)://host:port`` interface URL."""
    parts = urlsplit(url)
    target = parts.netloc or url
    defaults = _GrpcDefaults(
        [(k.lower(), v) for k, v in http.headers.items() if k.lower() == "authorization"],
        http.timeout.read,
    )
    if parts.scheme == "https":
        return grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(), interceptors=defaults.interceptors()
        )
    return grpc.aio.insecure_channel(target, interceptors=defaults.interceptors())


class _GrpcDefaults:
    """Adds metadata to every call, and a deadline to unary calls that have none.

    Give a channel :meth:`interceptors`: grpc.aio files an interceptor under its first
    matching kind only, so one object of both kinds would never see streaming calls.
    """

    def __init__(self, metadata: list[tuple[str, str]], timeout_s: float | None) -> None:
        self.metadata = metadata
        self.timeout_s = timeout_s

    def _details(
        self, details: grpc.aio.ClientCallDetails, *, unary: bool
    ) -> grpc.aio.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self.metadata]
        timeout = details.timeout
        if unary and timeout is None:
            timeout = self.timeout_s
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """One interceptor for unary calls, one for server-streaming calls."""
        return [_UnaryDefaults(self), _StreamDefaults(self)]


class _UnaryDefaults(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, defaults: _GrpcDefaults) -> None:
        self.defaults = defaults

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.defaults._details(details, unary=True), request)


class _StreamDefaults(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, defaults: _GrpcDefaults) -> None:
        self.defaults = defaults

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.defaults._details(details, unary=False), request)


def skill_message(
    skill: str,
    payload: BaseModel | dict[str, Any] | str,
    *,
    context_id: str | None = None,
    task_id: str | None = None,
) -> SendMessageRequest:
    """A SendMessage request for ``skill`` carrying ``payload`` as a data (or text) part."""
    if isinstance(payload, str):
        part: Part = new_text_part(payload)
    elif isinstance(payload, BaseModel):
        part = new_data_part(payload.model_dump(mode="json"))
    else:
        part = new_data_part(payload)
    metadata = Struct()
    metadata.update({SKILL_METADATA_KEY: skill})
    message = Message(
        role=Role.ROLE_USER,
        parts=[part],
        message_id=uuid.uuid4().hex,
        context_id=context_id or "",
        task_id=task_id or "",
        metadata=metadata,
    )
    return SendMessageRequest(message=message)


@overload
async def call_skill(
    client: Client,
    skill: str,
    payload: BaseModel | dict[str, Any] | str,
    *,
    result: None = None,
    context_id: str | None = None,
    on_update: UpdateCallback | None = None,
    reconnect: Reconnect | None = None,
) -> Task: ...


@overload
async def call_skill(
    client: Client,
    skill: str,
    payload: BaseModel | dict[str, Any] | str,
    *,
    result: type[M],
    context_id: str | None = None,
    on_update: UpdateCallback | None = None,
    reconnect: Reconnect | None = None,
) -> M: ...


async def call_skill(
    client: Client,
    skill: str,
    payload: BaseModel | dict[str, Any] | str,
    *,
    result: type[M] | None = None,
    context_id: str | None = None,
    on_update: UpdateCallback | None = None,
    reconnect: Reconnect | None = None,
) -> Task | M:
    """Send a skill request, follow its stream, and return the completed task.

    With ``result=Model`` the last data artifact is returned parsed as ``Model`` instead.
    Raises :class:`SkillFailed` when the task fails, is canceled or rejected, and
    :class:`NotDelivered` when no connection could be made (nothing was sent). When the
    caller is cancelled mid-call, the remote task is cancelled too.

    A stream that breaks off (connection lost, replica gone) is resumed with SubscribeToTask
    and the resume cursor (:mod:`protocol.streams`), through ``reconnect()`` when given (e.g.
    another replica of the agent): each event reaches ``on_update`` exactly once.
    """
    agent = _AGENT_NAMES.get(client, "")
    with telemetry.tracer().start_as_current_span(
        f"invoke_agent {agent}" if agent else "invoke_agent",
        kind=SpanKind.CLIENT,
        attributes={
            telemetry.OPERATION: "invoke_agent",
            telemetry.AGENT_NAME: agent,
            telemetry.SKILL: skill,
        },
    ) as span:
        task = await _follow(client, skill, payload, context_id, on_update, reconnect, span)
        if span.is_recording():
            state = TaskState.Name(task.status.state)
            span.set_attribute(telemetry.TASK_STATE, state)
            if task.status.state != TaskState.TASK_STATE_COMPLETED:
                span.set_status(StatusCode.ERROR, state)
    if task.status.state != TaskState.TASK_STATE_COMPLETED:
        raise SkillFailed(task)
    if result is None:
        return task
    data = task_data(task)
    if not data:
        raise RuntimeError(f"skill {skill!r} completed without a data artifact")
    return result.model_validate(data[-1])


async def _follow(
    client: Client,
    skill: str,
    payload: BaseModel | dict[str, Any] | str,
    context_id: str | None,
    on_update: UpdateCallback | None,
    reconnect: Reconnect | None,
    span: Span,
) -> Task:
    """Send the request and follow its stream, resuming it when it breaks off, until the
    task settles; returns the task however it ended. ``span`` learns the task's ids.

    Raises :class:`NotDelivered` when the request could not be sent at all.
    """
    task: Task | None = None
    cursor = 0
    failures = 0  # resumes in a row that brought nothing new
    message = skill_message(skill, payload, context_id=context_id)
    stream = client.send_message(message)
    while True:
        progressed = False
        try:
            async for event in stream:
                seq = event_sequence(event)
                if seq is not None:
                    if seq <= cursor:
                        continue  # already seen before the stream was resumed
                    cursor = seq
                progressed = True
                known = task.id if task is not None else ""
                task = _apply(task, event)
                if task is not None and task.id != known and span.is_recording():
                    span.set_attributes(
                        {
                            telemetry.TASK_ID: task.id,
                            telemetry.CONVERSATION_ID: task.context_id or context_id or "",
                        }
                    )
                if on_update is not None and task is not None:
                    await on_update(event, task)
        except asyncio.CancelledError:
            if task is not None and task.id and task.status.state not in TERMINAL_STATES:
                await _cancel_quietly(client, task.id)
            raise
        except Exception as exc:
            if task is None and never_connected(exc):
                raise NotDelivered(f"could not connect to send {skill!r}: {exc}") from exc
            failures = 0 if progressed else failures + 1
            # A task a moment old may not be stored yet where the resume lands: try again.
            retry = is_unreachable(exc) or (task is not None and isinstance(exc, TaskNotFoundError))
            if task is None or not task.id or not retry or failures > RESUME_ATTEMPTS:
                raise
            log.info("stream of task %s broke off (%s); resuming after %d", task.id, exc, cursor)
        if task is None or task.status.state in SETTLED_STATES:
            break
        await asyncio.sleep(min(RESUME_BACKOFF_S * 2**failures, 2.0))
        if reconnect is not None:
            client = await reconnect()
        stream = client.subscribe(
            SubscribeToTaskRequest(id=task.id),
            context=ClientCallContext(service_parameters=resume_parameters(cursor)),
        )
    if task is None:
        raise RuntimeError(f"skill {skill!r} answered with no task")
    return task


async def _cancel_quietly(client: Client, task_id: str, timeout_s: float = 5.0) -> None:
    """Cancel a remote task on the way out of a cancelled call; never raises."""
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(client.cancel_task(CancelTaskRequest(id=task_id)))
    except Exception as exc:  # gone, or already finished: nothing more to do
        log.info("could not cancel remote task %s: %s", task_id, exc)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an A2A call failed with, found along the exception's causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.status_code
        seen = seen.__cause__ or seen.__context__
    return None


def never_connected(exc: BaseException) -> bool:
    """Whether a call failed before any connection was made (the request was never sent)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.ConnectError | httpx.ConnectTimeout | NotDelivered):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_unreachable(exc: BaseException) -> bool:
    """Whether a call failed because the agent could not be reached (dead, not a refusal).

    A task failed because the instance running it died counts too: another may do it.
    """
    if isinstance(exc, SkillFailed) and exc.orphaned:
        return True
    if http_status(exc) in (502, 503):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError | A2AClientTimeoutError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _apply(task: Task | None, event: StreamResponse) -> Task | None:
    """Fold one stream event into the task it belongs to."""
    if event.HasField("task"):
        return event.task
    if event.HasField("message"):
        message_task = Task(id=event.message.task_id, context_id=event.message.context_id)
        message_task.status.state = TaskState.TASK_STATE_COMPLETED
        message_task.status.message.CopyFrom(event.message)
        return message_task
    if task is None:
        task = Task()
    if event.HasField("status_update"):
        update = event.status_update
        task.id, task.context_id = update.task_id, update.context_id
        task.status.CopyFrom(update.status)
    elif event.HasField("artifact_update"):
        append_artifact_to_task(task, event.artifact_update)
    return task


def task_data(task: Task) -> list[Any]:
    """Every data part of the task's artifacts, in order."""
    return [data for artifact in task.artifacts for data in get_data_parts(artifact.parts)]
