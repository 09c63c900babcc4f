"""The agent scaffold: one function builds an A2A server from a card spec and skill handlers.

Every agent gets the same surface: the card at ``/.well-known/agent-card.json``, JSON-RPC at
``/a2a/jsonrpc``, HTTP+JSON at ``/a2a/rest``, gRPC on a port of its own, ``/healthz`` and
``/metrics``; a Redis-backed task store; and self-registration with heartbeats for as long
as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from a2a.server.routes import (
    add_a2a_routes_to_fastapi,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.types import AgentCard
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.routing import BaseRoute

from agents.scaffold.executor import SkillContextBuilder, SkillExecutor, SkillHandler
from agents.scaffold.grpc_server import GrpcEndpoint
from agents.scaffold.limits import RequestLimits
from agents.scaffold.presence import Presence
from agents.scaffold.push import PushParts, push_parts
from agents.scaffold.settings import AgentSettings
from agents.scaffold.tasks.events import RedisTaskEventStream, ResumableRequestHandler
from agents.scaffold.tasks.store import RedisTaskStore
from protocol.auth import Authenticator, check_configured
from protocol.auth import enforced as auth_enforced
from protocol.card_routes import card_routes
from protocol.cards import CARD_PATH, JSONRPC_PATH, REST_PATH, CardSpec, build_agent_card
from protocol.error_status import A2AErrorStatusMiddleware, quiet_client_errors
from protocol.http import (
    A2APaths,
    A2ARequestGuard,
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    bind_socket,
    serve,
)
from protocol.signing import sign_card
from protocol.telemetry import configure_tracing, shutdown_tracing
from registry.directory import Registry
from registry.keys import RedisKeys
from registry.redis_client import redis_client
from registry.settings import RegistrySettings

log = logging.getLogger(__name__)

Lifespan = Callable[[], AbstractAsyncContextManager[None]]
ExtraMetrics = Callable[[], Awaitable[str]]
OPEN_PATHS = frozenset({CARD_PATH, "/healthz", "/livez", "/metrics"})


@dataclass
class AgentParts:
    """What an agent package supplies: its card, its skill handlers, and optional extras.

    ``ready`` says whether the agent can take work now (an engine still loading: no); until
    it does, ``/healthz`` answers 503 and the agent stays out of the registry. ``status``
    adds details to ``/healthz``; ``metrics`` adds Prometheus text to ``/metrics``.
    """

    card: CardSpec
    handlers: Mapping[str, SkillHandler]
    lifespan: Lifespan | None = None
    routes: Sequence[BaseRoute] = field(default_factory=tuple)
    ready: Callable[[], bool] | None = None
    status: Callable[[], dict[str, Any]] | None = None
    metrics: ExtraMetrics | None = None


def create_agent_app(
    parts: AgentParts,
    settings: AgentSettings,
    base_url: str,
    *,
    redis: aioredis.Redis | None = None,
) -> FastAPI:
    """Build the FastAPI app of one agent instance served at ``base_url``."""
    spec = parts.card
    if settings.capacity is not None:
        spec = CardSpec(**{**spec.__dict__, "capacity": settings.capacity})
    check_configured(settings)
    auth_on = auth_enforced(settings)
    grpc_endpoint = GrpcEndpoint(settings, base_url)
    card = build_agent_card(
        spec, base_url, grpc_url=grpc_endpoint.url, require_token=auth_on, public=True
    )
    # Authenticated callers get every skill, operator-only ones included.
    extended_card = (
        build_agent_card(spec, base_url, grpc_url=grpc_endpoint.url, require_token=True)
        if auth_on
        else None
    )
    signing_key = settings.signing_key()
    if signing_key is not None:  # sign last: a signature covers the whole card
        card = sign_card(card, signing_key)
        if extended_card is not None:
            extended_card = sign_card(extended_card, signing_key)
    client = redis if redis is not None else redis_client(settings)
    keys = RedisKeys(settings.redis_prefix)
    executor = SkillExecutor(spec.name, parts.handlers, default_skill=spec.default_skill)
    task_store = RedisTaskStore(
        client,
        spec.name,
        keys=keys,
        retention_s=settings.task_retention_s,
        coalesce_s=settings.task_write_coalesce_s,
        timeout_s=settings.task_store_timeout_s,
    )
    task_events = RedisTaskEventStream(task_store)
    push = push_parts(client, spec.name, keys, settings)
    limits = RequestLimits(
        max_parts=settings.max_message_parts,
        max_in_flight=settings.max_in_flight_tasks or spec.capacity,
        retry_after_s=settings.busy_retry_after_s,
    )
    handler = _request_handler(
        executor,
        task_store,
        task_events,
        card,
        push=push,
        limits=limits,
        extended_card=extended_card,
        operator_skills=frozenset(s.id for s in spec.skills if s.operator_only and auth_on),
    )
    registry = Registry(client, RegistrySettings(**settings.model_dump()), keys=keys)
    presence = Presence(
        registry,
        card,
        instance_id=settings.instance_id,
        interval_s=settings.heartbeat_interval_s,
        load=lambda: executor.in_flight,
        ready=parts.ready,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if parts.lifespan is not None:
                await stack.enter_async_context(parts.lifespan())
            await task_store.start()
            stopper = asyncio.create_task(handler.stop_cancelled_tasks(), name="cancel-watch")
            stack.callback(stopper.cancel)
            announcements = asyncio.create_task(push.config_store.follow_announcements())
            stack.callback(announcements.cancel)
            await grpc_endpoint.start(handler)
            presence.start()
            log.info("agent started", extra={"agent": spec.name, "url": base_url})
            try:
                yield
            finally:
                await presence.stop()
                # gRPC takes no new calls from now; its running ones end with their tasks.
                grpc_stopped = asyncio.create_task(grpc_endpoint.stop(settings.graceful_shutdown_s))
                # Out of the registry, no new work comes: let what runs finish (bounded).
                grace = settings.graceful_shutdown_s
                if not (await executor.drain(grace) and await task_store.drain(grace)):
                    log.warning(
                        "tasks still running at shutdown are stopped", extra={"agent": spec.name}
                    )
                await grpc_stopped
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(handler.aclose(), settings.graceful_shutdown_s)
                with contextlib.suppress(Exception):
                    await push.aclose()  # bounded by push_drain_s
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task_store.aclose(), settings.graceful_shutdown_s)
                await task_events.aclose()
                if redis is None:
                    await client.aclose()
                shutdown_tracing()

    app = FastAPI(title=f"Scriptorium {spec.name}", version=spec.version, lifespan=lifespan)
    app.state.card = card
    app.state.push = push
    app.state.http_protocol = grpc_endpoint.http_protocol
    app.state.executor = executor
    app.state.presence = presence
    _add_guards(app, settings)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok",
            "agent": spec.name,
            "registered": presence.registered,
            "in_flight": executor.in_flight,
        }
        if parts.status is not None:
            body.update(parts.status())
        if parts.ready is not None and not parts.ready():
            return JSONResponse({**body, "status": "starting"}, status_code=503)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            return JSONResponse({**body, "status": "degraded", "redis": str(exc)}, 503)
        return JSONResponse(body)

    @app.get("/livez")
    async def livez() -> JSONResponse:
        """Liveness: this process answers HTTP (asks neither Redis nor an engine: /healthz)."""
        return JSONResponse({"status": "ok", "agent": spec.name})

    @app.get("/metrics")
    async def metrics() -> Response:
        text = generate_latest()
        if parts.metrics is not None:
            text += (await parts.metrics()).encode()
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.router.routes.extend(parts.routes)
    add_a2a_routes_to_fastapi(
        app,
        agent_card_routes=card_routes(card),
        jsonrpc_routes=create_jsonrpc_routes(handler, rpc_url=JSONRPC_PATH),
        rest_routes=create_rest_routes(handler, path_prefix=REST_PATH),
    )
    return app


def _request_handler(
    executor: SkillExecutor,
    task_store: RedisTaskStore,
    task_events: RedisTaskEventStream,
    card: AgentCard,
    *,
    push: PushParts,
    limits: RequestLimits,
    extended_card: AgentCard | None = None,
    operator_skills: frozenset[str] = frozenset(),
) -> ResumableRequestHandler:
    """The SDK request handler every transport of this agent serves; ``extended_card`` is
    served to authenticated callers (GetExtendedAgentCard)."""
    return ResumableRequestHandler(
        executor,
        task_store,
        card,
        event_stream=task_events,
        limits=limits,
        push_config_store=push.config_store,
        push_sender=push.sender,
        push_url_validator=push.url_validator,
        extended_agent_card=extended_card,
        request_context_builder=SkillContextBuilder(
            executor,
            extended_card or card,
            task_id_generator=task_store.id_generator(),
            operator_skills=operator_skills,
        ),
    )


def _add_guards(app: FastAPI, settings: AgentSettings) -> None:
    """Reject oversize bodies (413) and, unless SCRIPTORIUM_AUTH=off, calls without a valid
    bearer credential (401);
    refuse A2A bodies that are not JSON (415) or nest too deep (400); give HTTP+JSON errors
    the spec's statuses; log client errors as one warning line."""
    a2a = A2APaths(JSONRPC_PATH, REST_PATH)
    app.add_middleware(A2AErrorStatusMiddleware, prefix=REST_PATH)
    app.add_middleware(
        A2ARequestGuard,
        a2a=a2a,
        max_bytes=settings.max_request_bytes,
        max_depth=settings.max_json_depth,
    )
    if auth_enforced(settings):
        app.add_middleware(
            BearerAuthMiddleware, authenticator=Authenticator(settings), open_paths=OPEN_PATHS
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, a2a=a2a)
    quiet_client_errors()


async def serve_agent(parts: AgentParts, settings: AgentSettings, *, port: int) -> None:
    """Serve one agent until SIGINT/SIGTERM; ``port=0`` picks a free port.

    Traces go where the ``OTEL_*`` environment says (off by default), as service
    ``parts.card.name`` (:func:`protocol.telemetry.configure_tracing`).
    """
    configure_tracing(parts.card.name)
    sock = bind_socket(settings.host, port)
    bound_port = sock.getsockname()[1]
    base_url = f"http://{settings.public_host}:{bound_port}"
    app = create_agent_app(parts, settings, base_url)

    await serve(app, sock, graceful_shutdown_s=settings.graceful_shutdown_s)
