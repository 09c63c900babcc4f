"""The registry's HTTP API (FastAPI): discovery, registration, sessions, event streams.

``create_app`` builds the app; ``serve`` runs it with uvicorn. The app sweeps agent
states every ``sweep_interval_s`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from protocol import telemetry
from protocol.auth import Authenticator, check_configured
from protocol.auth import enforced as auth_enforced
from protocol.http import BearerAuthMiddleware, BodyLimitMiddleware
from registry.card_schema import CardBody
from registry.errors import (
    AgentNotFound,
    InstanceConflict,
    InvalidCard,
    InvalidRequest,
    NoCapacity,
    RecordUnreadable,
    RegistrationRefused,
    RegistryError,
    SessionClosed,
    SessionNotFound,
    SpoofedCard,
)
from registry.events import SessionEvent, SessionLog
from registry.keys import RedisKeys
from registry.limits import (
    INSTANCE_ID_PATTERN,
    INSTANCE_ID_RULE,
    LEASE_CEILING_S,
    MAX_PAGE,
    MAX_ROLES,
    MAX_SKILL_LENGTH,
    NAME_PATTERN,
    NAME_RULE,
    STREAM_ID_PARAM_PATTERN,
)
from registry.middleware import Metrics, MetricsMiddleware
from registry.network import IPNetwork, address_allowed, parse_networks
from registry.records import AgentRecord, Change
from registry.redisio import describe, redis_client
from registry.registry import Registry
from registry.sessions import Session, SessionBroker, SessionState
from registry.settings import RegistrySettings
from registry.streams import StreamEnded, StreamHub, StreamSlots
from registry.viewer import viewer_router

log = logging.getLogger(__name__)

_STATUS: dict[type[RegistryError], int] = {
    InvalidCard: 422,
    SpoofedCard: 422,
    InvalidRequest: 422,
    RegistrationRefused: 403,
    AgentNotFound: 404,
    SessionNotFound: 404,
    NoCapacity: 409,
    SessionClosed: 409,
    InstanceConflict: 409,
    RecordUnreadable: 500,
}
_SSE_PING_S = 15
_PAGE = 1000
#: FastAPI's answer to a body it cannot decode (not UTF-8, ...); answered as a 422 instead.
_UNPARSED_BODY = "There was an error parsing the body"


# -- models -------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One reason a request failed validation."""

    loc: list[str | int] = Field(description="Where: `body`/`query`/`path`/`header`, then keys.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error the API answers (4xx and 5xx) has this shape."""

    detail: str = Field(description="What went wrong and what to do about it.")
    errors: list[FieldError] | None = Field(
        default=None, description="For a request that failed validation (422): each reason."
    )


class Health(BaseModel):
    status: str
    redis: str


#: 32 lowercase hex digits, not all zero (a W3C trace id), without look-ahead: the first
#: non-zero digit comes after i zeros.
TRACE_ID_PATTERN = (
    "^(" + "|".join(f"0{{{i}}}[1-9a-f][0-9a-f]{{{31 - i}}}" for i in range(32)) + ")$"
)
RoleName = Annotated[str, Field(pattern=NAME_PATTERN)]
SkillId = Annotated[str, Field(min_length=1, max_length=MAX_SKILL_LENGTH)]
#: A lease in seconds. The schema of each app states its ``max_session_lease_s`` as the
#: maximum (see ``_complete_schema``); LEASE_CEILING_S is the hard ceiling of any setting.
LeaseS = Annotated[
    float,
    Field(
        gt=0,
        le=LEASE_CEILING_S,
        allow_inf_nan=False,
        description="Lease in seconds; at most max_session_lease_s (default 3600).",
    ),
]
_STRICT = ConfigDict(strict=True)
#: An optional query or header parameter: left out, never "null" (not in the schema).
Absent = SkipJsonSchema[None]
SkillText = Annotated[str, Field(max_length=MAX_SKILL_LENGTH)]


class NegotiateBody(BaseModel):
    model_config = _STRICT

    roles: dict[RoleName, SkillId] = Field(
        min_length=1,
        max_length=MAX_ROLES,
        description="Role name -> skill id.",
        examples=[{"writer": "write"}],
        json_schema_extra={"additionalProperties": False},  # every key matches the pattern
    )
    lease_s: LeaseS | None = Field(default=None, description="Default session_lease_s (300 s).")
    trace_id: str | None = Field(
        default=None, pattern=TRACE_ID_PATTERN, description="W3C trace id; not all zeros."
    )
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RebindBody(BaseModel):
    model_config = _STRICT

    role: RoleName


class RenewBody(BaseModel):
    model_config = _STRICT

    lease_s: LeaseS | None = Field(default=None, description="Default session_lease_s (300 s).")


@dataclass(frozen=True)
class Services:
    """What the routes use; one set per app."""

    settings: RegistrySettings
    redis: aioredis.Redis
    registry: Registry
    sessions: SessionBroker
    log: SessionLog
    metrics: Metrics
    networks: list[IPNetwork]
    hub: StreamHub
    slots: StreamSlots


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]


async def _authorize_write(request: Request, svc: Svc) -> None:
    """Writes need a peer in allowed_networks (the bearer credential is checked by
    middleware)."""
    peer = request.client.host if request.client else None
    if peer is None or not address_allowed(peer, svc.networks):
        raise HTTPException(
            403,
            f"peer {peer} is outside the allowed networks {svc.settings.allowed_networks}; "
            "call from an allowed host or extend SCRIPTORIUM_ALLOWED_NETWORKS",
        )


Write = [Depends(_authorize_write)]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)
}
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many open streams (in all, or from this address); see Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}


def is_stream_path(path: str) -> bool:
    """Whether ``path`` is one of the event streams (guarded like writes unless auth is off)."""
    return path == "/changes" or (path.startswith("/sessions/") and path.endswith("/events"))


def _guarded(method: str, path: str) -> bool:
    return method in WRITE_METHODS or is_stream_path(path)


router = APIRouter(responses=_ERRORS)


# -- agents -------------------------------------------------------------------------------


@router.get("/agents", response_model=list[AgentRecord], tags=["agents"])
async def list_agents(
    svc: Svc,
    skill: Annotated[SkillText | Absent, Query()] = None,
    tag: Annotated[SkillText | Absent, Query()] = None,
    healthy_only: Annotated[
        bool, Query(description="Only healthy instances, most free capacity first.")
    ] = False,
) -> list[AgentRecord]:
    """Registered instances (card, state, load, leases, capacity)."""
    if healthy_only:
        return await svc.registry.discover(skill, tag)
    return await svc.registry.list(skill=skill, tag=tag)


@router.get("/agents/{instance_id:path}", response_model=AgentRecord, tags=["agents"])
async def get_agent(instance_id: str, svc: Svc) -> AgentRecord:
    """One instance."""
    record = await svc.registry.get(instance_id)
    if record is None:
        raise AgentNotFound(instance_id)
    return record


@router.post(
    "/agents", response_model=AgentRecord, status_code=201, dependencies=Write, tags=["agents"]
)
async def register_agent(
    svc: Svc,
    card: Annotated[CardBody, Body(description="The agent card (A2A v1.0 JSON).")],
    instance_id: Annotated[
        Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)] | Absent,
        Query(description="Default: `name@host-port` from the card's name and URL."),
    ] = None,
) -> AgentRecord:
    """Register an instance; the registry fetches its card to check it is the same.

    409 when the instance id is held by another live instance (another card URL). Besides
    the schema, a card needs unique skill ids, one host for every interface (one port for
    the HTTP ones), a JSONRPC or HTTP+JSON interface and a capacity in 1..1000000 (422).
    """
    return await svc.registry.register(card.wire(), instance_id=instance_id, verify=True)


@router.delete("/agents/{instance_id:path}", status_code=204, dependencies=Write, tags=["agents"])
async def deregister_agent(instance_id: str, svc: Svc) -> Response:
    """Remove an instance."""
    if not await svc.registry.deregister(instance_id):
        raise AgentNotFound(instance_id)
    return Response(status_code=204)


# -- sessions -----------------------------------------------------------------------------


@router.get("/sessions", response_model=list[Session], tags=["sessions"])
async def list_sessions(
    svc: Svc,
    state: SessionState | Absent = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Newest first, at most.")] = 1000,
) -> list[Session]:
    """Active sessions and closed ones still retained, newest first."""
    return await svc.sessions.list(state=state, limit=limit)


@router.post(
    "/sessions", response_model=Session, status_code=201, dependencies=Write, tags=["sessions"]
)
async def negotiate_session(body: NegotiateBody, svc: Svc, request: Request) -> Session:
    """Lease one healthy instance per role, all or nothing (409 when a role cannot be met).

    Without ``trace_id`` the session takes the caller's, from its ``traceparent`` header.
    """
    with telemetry.tracer().start_as_current_span(
        "negotiate session", context=telemetry.extract(request.headers), kind=SpanKind.SERVER
    ):
        return await svc.sessions.negotiate(
            body.roles, lease_s=body.lease_s, trace_id=body.trace_id, session_id=body.session_id
        )


@router.get("/sessions/{session_id}", response_model=Session, tags=["sessions"])
async def get_session(session_id: str, svc: Svc) -> Session:
    """One session."""
    return await svc.sessions.get(session_id)


@router.post(
    "/sessions/{session_id}/rebind",
    response_model=Session,
    dependencies=Write,
    tags=["sessions"],
)
async def rebind_session(session_id: str, body: RebindBody, svc: Svc) -> Session:
    """Move a role to another healthy instance (409 and no change when none is free)."""
    return await svc.sessions.rebind(session_id, body.role)


@router.post(
    "/sessions/{session_id}/renew",
    response_model=Session,
    dependencies=Write,
    tags=["sessions"],
)
async def renew_session(session_id: str, svc: Svc, body: RenewBody | None = None) -> Session:
    """Extend the session's lease from now."""
    return await svc.sessions.renew(session_id, body.lease_s if body else None)


@router.delete("/sessions/{session_id}", status_code=204, dependencies=Write, tags=["sessions"])
async def release_session(session_id: str, svc: Svc) -> Response:
    """Give the session's leases back (idempotent)."""
    await svc.sessions.release(session_id)
    return Response(status_code=204)


#: The models SSE ``data`` carries (added to the schema's components by ``_complete_schema``).
_EVENT_MODELS: tuple[type[BaseModel], ...] = (Change, SessionEvent)


def _sse_ok(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    name = model.__name__
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Stream id: resume after it (Last-Event-ID)."},
            "event": {"type": "string", "description": "The kind."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{name}"},
            },
        },
        "required": ["id", "event", "data"],
    }
    return {
        200: {
            "description": f"Server-Sent Events (one schema per event); each `data` is a {name}.",
            "content": {"text/event-stream": {"schema": event}},
        },
        **_STREAM_ERRORS,
    }


#: Constraints sit on the ``str`` itself: on the optional union they would be enforced but
#: left out of the schema.
StreamIdText = Annotated[str, Field(pattern=STREAM_ID_PARAM_PATTERN)]
StreamId = Annotated[
    StreamIdText | Absent,
    Query(
        description="Resume strictly after this stream id (empty: from the start).",
    ),
]
LastEventId = Annotated[
    StreamIdText | Absent,
    Header(
        description="Resume strictly after this id; wins over `after` (empty: not given).",
    ),
]


@router.get(
    "/sessions/{session_id}/events",
    response_class=EventSourceResponse,
    tags=["sessions"],
    responses=_sse_ok(SessionEvent),
)
async def session_events(
    session_id: str,
    svc: Svc,
    request: Request,
    after: StreamId = None,
    follow: Annotated[bool, Query(description="Keep streaming until the session ends.")] = True,
    last_event_id: LastEventId = None,
) -> Response:
    """The session's event log as Server-Sent Events (``id`` = stream id, ``event`` = kind).

    Honours ``Last-Event-ID`` (it wins over ``after``) by resuming strictly after it.
    """
    start = last_event_id or after or None  # empty: not given
    first = await svc.log.read(session_id, after=start, count=_PAGE)  # 404 before streaming
    refused = _stream_refused(request, svc)  # checked and taken with no await in between
    if refused is not None:
        return refused

    async def stream() -> AsyncIterator[ServerSentEvent]:
        page, last = first, start
        try:
            while page:
                for event in page:
                    yield _sse(event.id, event.kind, event.model_dump_json())
                last = page[-1].id
                if len(page) < _PAGE:
                    break
                page = await svc.log.read(session_id, after=last, count=_PAGE)
            if follow:
                async for event in svc.log.follow(session_id, after=last, hub=svc.hub):
                    yield _sse(event.id, event.kind, event.model_dump_json())
        except (RedisError, RegistryError, StreamEnded) as exc:
            log.warning(
                "session event stream ended early",
                extra={"session_id": session_id, "error": str(exc)},
            )

    return _open_stream(request, svc, stream())


@router.get(
    "/changes",
    response_class=EventSourceResponse,
    tags=["agents"],
    responses=_sse_ok(Change),
)
async def changes(
    svc: Svc,
    request: Request,
    after: Annotated[
        StreamIdText | Absent,
        Query(
            description="Resume strictly after this id ('0' for everything).",
        ),
    ] = None,
    last_event_id: LastEventId = None,
) -> Response:
    """The registry's change feed as Server-Sent Events (new changes only by default)."""
    start = last_event_id or after or "$"
    refused = _stream_refused(request, svc)
    if refused is not None:
        return refused

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for change in svc.registry.watch(start, hub=svc.hub):
                yield _sse(change.id, change.kind, change.model_dump_json())
        except (RedisError, StreamEnded) as exc:
            log.warning("change stream ended early", extra={"error": str(exc)})

    return _open_stream(request, svc, stream())


def _sse(event_id: str, kind: str, data: str) -> ServerSentEvent:
    return ServerSentEvent(data=data, id=event_id, event=kind)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _stream_refused(request: Request, svc: Services) -> JSONResponse | None:
    """A 429 when another stream would exceed ``max_streams`` or ``max_streams_per_client``."""
    reason = svc.slots.refusal(_client(request))
    if reason is None:
        return None
    retry = svc.settings.stream_retry_after_s
    log.warning("event stream refused", extra={"client": _client(request), "reason": reason})
    return JSONResponse(
        {"detail": f"{reason}: close a stream or retry in {retry} s"},
        status_code=429,
        headers={"Retry-After": str(retry)},
    )


class _HeldStream(EventSourceResponse):
    """An SSE response that gives its stream slot back however it ends."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], release: Callable[[], None]):
        super().__init__(content, ping=_SSE_PING_S)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _open_stream(
    request: Request, svc: Services, content: AsyncIterator[ServerSentEvent]
) -> Response:
    return _HeldStream(content, svc.slots.take(_client(request)))


# -- operations ---------------------------------------------------------------------------


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["ops"])
async def healthz(svc: Svc) -> JSONResponse:
    """200 when Redis answers, 503 otherwise."""
    try:
        async with asyncio.timeout(svc.settings.redis_timeout_s):
            await svc.redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return JSONResponse({"status": "degraded", "redis": str(exc) or "timeout"}, 503)
    return JSONResponse({"status": "ok", "redis": "ok"})


@router.get("/livez", tags=["ops"])
async def livez() -> dict[str, str]:
    """Liveness: this process answers HTTP (Redis is not asked: that is /healthz)."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response, tags=["ops"])
async def metrics(svc: Svc) -> Response:
    """Prometheus metrics (text format)."""
    try:
        records = await svc.registry.list()
        active = await svc.redis.zcard(svc.registry.keys.sessions)
        seconds, micros = await svc.redis.time()  # after the reads: ages are never negative
    except RedisError as exc:
        log.warning("metrics gauges not refreshed", extra={"error": str(exc)})
        svc.metrics.forget_instances()
    else:
        svc.metrics.refresh(records, active, int(seconds) * 1000 + int(micros) // 1000)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- app ----------------------------------------------------------------------------------


async def sweep_forever(registry: Registry, interval_s: float, metrics: Metrics) -> None:
    """Sweep every ``interval_s``; failures are logged and retried on the next tick."""
    while True:
        try:
            report = await registry.sweep()
            metrics.sessions_expired.inc(len(report.expired_sessions))
        except RedisError as exc:
            metrics.sweep_errors.inc()
            log.warning("sweep failed; retrying", extra={"error": str(exc)})
        except Exception:
            metrics.sweep_errors.inc()
            log.exception("sweep failed unexpectedly; retrying")
        await asyncio.sleep(interval_s)


def create_app(settings: RegistrySettings, *, redis: aioredis.Redis | None = None) -> FastAPI:
    """The registry app. Without ``redis`` it connects to ``settings.redis_url`` and closes
    that client on shutdown. Raises :class:`~protocol.auth.AuthConfigError` when auth is
    required and no credential is configured."""
    check_configured(settings)
    client = redis if redis is not None else redis_client(settings, wait_for_connection=True)
    keys = RedisKeys(settings.redis_prefix)
    registry = Registry(client, settings, keys=keys)
    services = Services(
        settings=settings,
        redis=client,
        registry=registry,
        sessions=registry.sessions,
        log=SessionLog(client, settings, keys=keys),
        metrics=Metrics(),
        networks=parse_networks(settings.allowed_networks),
        hub=StreamHub(client),
        slots=StreamSlots(total=settings.max_streams, per_client=settings.max_streams_per_client),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(
            sweep_forever(registry, settings.sweep_interval_s, services.metrics)
        )
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await services.hub.aclose()
            if redis is None:
                await client.aclose()
            telemetry.shutdown_tracing()  # the last spans, before uvicorn re-raises SIGTERM

    app = FastAPI(
        title="Scriptorium registry",
        description="Discovery of A2A agent instances and session leasing.",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.services = services
    app.include_router(router)
    app.include_router(viewer_router())
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if auth_enforced(settings):
        app.add_middleware(
            BearerAuthMiddleware, authenticator=Authenticator(settings), protects=_guarded
        )
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    _install_error_handlers(app, client)
    _complete_schema(app, settings)
    return app


def _complete_schema(app: FastAPI, settings: RegistrySettings) -> None:
    """What FastAPI's schema cannot say by itself: the lease maximum is this app's
    ``max_session_lease_s``; unless auth is off, the writes and streams declare bearer auth; the
    models event streams carry are in the components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        models = schema["components"]["schemas"]
        for model in _EVENT_MODELS:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            models.update(body.pop("$defs", {}))
            models[model.__name__] = body
        for name in ("NegotiateBody", "RenewBody"):
            for branch in models[name]["properties"]["lease_s"].get("anyOf", []):
                if branch.get("type") == "number":
                    branch["maximum"] = settings.max_session_lease_s
        if auth_enforced(settings):
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if _guarded(method.upper(), path):
                        operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI, client: aioredis.Redis) -> None:
    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 422)
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "request refused",
            extra={"path": request.url.path, "status": status, "error": str(exc)},
        )
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unreachable", extra={"path": request.url.path, "error": str(exc)})
        detail = (
            f"Redis is unreachable at {describe(client)}: {exc}. Start Redis/Valkey or set "
            "REDIS_URL; the registry recovers by itself when it is back."
        )
        return JSONResponse({"detail": detail}, status_code=503)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldError(loc=list(e.get("loc", ())), msg=_message(e), type=e.get("type", ""))
            for e in exc.errors()
        ]
        reasons = "; ".join(_reason(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        body = ErrorBody(detail=f"invalid request: {reasons}{more}", errors=errors)
        log.info("request refused", extra={"path": request.url.path, "status": 422})
        return JSONResponse(body.model_dump(mode="json"), status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            allow = _allowed_methods(request)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            return JSONResponse(
                {"detail": f"{request.method} is not allowed on {request.url.path}; use {allow}"},
                status_code=405,
                headers={"Allow": allow},
            )
        if exc.status_code == 400 and exc.detail == _UNPARSED_BODY:
            return JSONResponse(
                {"detail": "invalid request: the body is not JSON (UTF-8); send a JSON object"},
                status_code=422,
            )
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(RedisConnectionError, redis_down)
    app.add_exception_handler(RedisTimeoutError, redis_down)


#: What each id pattern means, said in words in validation errors.
_PATTERN_RULES = {
    INSTANCE_ID_PATTERN: f"not a usable instance id: use {INSTANCE_ID_RULE}",
    NAME_PATTERN: f"not a usable name: use {NAME_RULE}",
    STREAM_ID_PARAM_PATTERN: "not a stream id: pass the `id` of the last event you received",
}


def _message(error: Any) -> str:
    pattern = (error.get("ctx") or {}).get("pattern")
    if error.get("type") == "string_pattern_mismatch" and pattern in _PATTERN_RULES:
        return _PATTERN_RULES[pattern]
    return str(error.get("msg", ""))


def _reason(error: FieldError) -> str:
    if error.type == "json_invalid":
        return "the body is not valid JSON"
    where = ".".join(str(part) for part in error.loc)
    return f"{where}: {error.msg}"


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path (for ``Allow``)."""
    methods = {"OPTIONS"}
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


# -- serving ------------------------------------------------------------------------------


async def serve(settings: RegistrySettings, *, host: str, port: int) -> None:
    """Run the registry until SIGINT/SIGTERM or cancellation, then shut down gracefully."""
    telemetry.configure_tracing("registry")
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    log.info("registry serving", extra={"host": host, "port": port})
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
