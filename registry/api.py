"""The registry's HTTP API (FastAPI): discovery, registration, sessions, event streams.

``create_app`` builds the app; ``serve`` runs it with uvicorn. The app sweeps agent
states every ``sweep_interval_s`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
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
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent

from protocol.http import BearerAuthMiddleware, BodyLimitMiddleware
from registry.errors import (
    AgentNotFound,
    InvalidCard,
    InvalidRequest,
    NoCapacity,
    RegistrationRefused,
    RegistryError,
    SessionClosed,
    SessionNotFound,
    SpoofedCard,
)
from registry.events import SessionEvent, SessionLog
from registry.keys import RedisKeys
from registry.middleware import Metrics, MetricsMiddleware
from registry.network import IPNetwork, address_allowed, parse_networks
from registry.records import AgentRecord, AgentState, Change
from registry.redisio import describe, redis_client
from registry.registry import Registry
from registry.sessions import Session, SessionBroker, SessionState
from registry.settings import RegistrySettings

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
}
_SSE_PING_S = 15
_PAGE = 1000


# -- models -------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class Health(BaseModel):
    status: str
    redis: str


class NegotiateBody(BaseModel):
    roles: dict[str, str] = Field(
        min_length=1, description="Role name -> skill id.", examples=[{"writer": "write"}]
    )
    lease_s: float | None = Field(default=None, gt=0, description="Lease; default 300 s.")
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RebindBody(BaseModel):
    role: str = Field(min_length=1)


class RenewBody(BaseModel):
    lease_s: float | None = Field(default=None, gt=0)


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


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]


async def _authorize_write(request: Request, svc: Svc) -> None:
    """Writes need a peer in allowed_networks (the bearer token is checked by middleware)."""
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

router = APIRouter(responses=_ERRORS)


# -- agents -------------------------------------------------------------------------------


@router.get("/agents", response_model=list[AgentRecord], tags=["agents"])
async def list_agents(
    svc: Svc,
    skill: str | None = None,
    tag: str | None = None,
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
    card: Annotated[dict[str, Any], Body(description="The agent card (A2A v1.0 JSON).")],
    instance_id: str | None = None,
) -> AgentRecord:
    """Register an instance; the registry fetches its card to check it is the same."""
    return await svc.registry.register(card, instance_id=instance_id, verify=True)


@router.delete("/agents/{instance_id:path}", status_code=204, dependencies=Write, tags=["agents"])
async def deregister_agent(instance_id: str, svc: Svc) -> Response:
    """Remove an instance."""
    if not await svc.registry.deregister(instance_id):
        raise AgentNotFound(instance_id)
    return Response(status_code=204)


# -- sessions -----------------------------------------------------------------------------


@router.get("/sessions", response_model=list[Session], tags=["sessions"])
async def list_sessions(svc: Svc, state: SessionState | None = None) -> list[Session]:
    """Active sessions and closed ones still retained, newest first."""
    return await svc.sessions.list(state=state)


@router.post(
    "/sessions", response_model=Session, status_code=201, dependencies=Write, tags=["sessions"]
)
async def negotiate_session(body: NegotiateBody, svc: Svc) -> Session:
    """Lease one healthy instance per role, all or nothing (409 when a role cannot be met)."""
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


@router.get(
    "/sessions/{session_id}/events",
    response_class=EventSourceResponse,
    tags=["sessions"],
    responses={200: {"content": {"text/event-stream": {}}, "model": SessionEvent}},
)
async def session_events(
    session_id: str,
    svc: Svc,
    after: Annotated[str | None, Query(description="Resume strictly after this id.")] = None,
    follow: Annotated[bool, Query(description="Keep streaming until the session ends.")] = True,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The session's event log as Server-Sent Events (``id`` = stream id, ``event`` = kind).

    Honours ``Last-Event-ID`` (it wins over ``after``) by resuming strictly after it.
    """
    start = last_event_id or after
    first = await svc.log.read(session_id, after=start, count=_PAGE)  # 404 before streaming

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
                async for event in svc.log.follow(session_id, after=last):
                    yield _sse(event.id, event.kind, event.model_dump_json())
        except (RedisError, RegistryError) as exc:
            log.warning(
                "session event stream ended early",
                extra={"session_id": session_id, "error": str(exc)},
            )

    return EventSourceResponse(stream(), ping=_SSE_PING_S)


@router.get(
    "/changes",
    response_class=EventSourceResponse,
    tags=["agents"],
    responses={200: {"content": {"text/event-stream": {}}, "model": Change}},
)
async def changes(
    svc: Svc,
    after: Annotated[
        str | None, Query(description="Resume strictly after this id ('0' for everything).")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The registry's change feed as Server-Sent Events (new changes only by default)."""
    start = last_event_id or after or "$"

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for change in svc.registry.watch(start):
                yield _sse(change.id, change.kind, change.model_dump_json())
        except RedisError as exc:
            log.warning("change stream ended early", extra={"error": str(exc)})

    return EventSourceResponse(stream(), ping=_SSE_PING_S)


def _sse(event_id: str, kind: str, data: str) -> ServerSentEvent:
    return ServerSentEvent(data=data, id=event_id, event=kind)


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


@router.get("/metrics", response_class=Response, tags=["ops"])
async def metrics(svc: Svc) -> Response:
    """Prometheus metrics (text format)."""
    try:
        records = await svc.registry.list()
        active = await svc.redis.zcard(svc.registry.keys.sessions)
    except RedisError as exc:
        log.warning("metrics gauges not refreshed", extra={"error": str(exc)})
    else:
        for state in AgentState:
            svc.metrics.agents.labels(state.value).set(sum(1 for r in records if r.state == state))
        svc.metrics.sessions_active.set(active)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- app ----------------------------------------------------------------------------------


async def sweep_forever(registry: Registry, interval_s: float, metrics: Metrics) -> None:
    """Sweep every ``interval_s``; failures are logged and retried on the next tick."""
    while True:
        try:
            await registry.sweep()
        except RedisError as exc:
            metrics.sweep_errors.inc()
            log.warning("sweep failed; retrying", extra={"error": str(exc)})
        except Exception:
            metrics.sweep_errors.inc()
            log.exception("sweep failed unexpectedly; retrying")
        await asyncio.sleep(interval_s)


def create_app(settings: RegistrySettings, *, redis: aioredis.Redis | None = None) -> FastAPI:
    """The registry app. Without ``redis`` it connects to ``settings.redis_url`` and closes
    that client on shutdown."""
    client = redis if redis is not None else redis_client(settings)
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
            if redis is None:
                await client.aclose()

    app = FastAPI(
        title="Scriptorium registry",
        description="Discovery of A2A agent instances and session leasing.",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.services = services
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.token is not None:
        app.add_middleware(
            BearerAuthMiddleware,
            token=settings.token.get_secret_value(),
            protects=lambda method, path: method in WRITE_METHODS,
        )
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    _install_error_handlers(app, client)
    return app


def _install_error_handlers(app: FastAPI, client: aioredis.Redis) -> None:
    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        log.info(
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

    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(RedisConnectionError, redis_down)
    app.add_exception_handler(RedisTimeoutError, redis_down)


# -- serving ------------------------------------------------------------------------------


async def serve(settings: RegistrySettings, *, host: str, port: int) -> None:
    """Run the registry until SIGINT/SIGTERM or cancellation, then shut down gracefully."""
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
