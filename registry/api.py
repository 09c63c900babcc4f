"""The registry's HTTP app (FastAPI): ``create_app`` composes the routers of
``registry.routes`` (agents, sessions, event streams, ops) with the session viewer, the
middleware and the error handlers; ``serve`` runs it with uvicorn. The app sweeps agent
states every ``sweep_interval_s`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from protocol import http, telemetry
from protocol.auth import Authenticator, check_configured
from protocol.auth import enforced as auth_enforced
from protocol.http import BearerAuthMiddleware, BodyLimitMiddleware, bind_socket
from protocol.network import parse_networks
from registry.directory import Registry
from registry.errors import RegistryError
from registry.events import SessionLog
from registry.keys import RedisKeys
from registry.limits import (
    INSTANCE_ID_PATTERN,
    INSTANCE_ID_RULE,
    NAME_PATTERN,
    NAME_RULE,
    STREAM_ID_PARAM_PATTERN,
)
from registry.middleware import Metrics, MetricsMiddleware
from registry.redis_client import describe, redis_client
from registry.routes import agents, events, ops, sessions
from registry.routes.common import ErrorBody, FieldError, Services, is_guarded
from registry.settings import RegistrySettings
from registry.streams import StreamHub, StreamSlots
from registry.viewer import viewer_router

log = logging.getLogger(__name__)

#: FastAPI's answer to a body it cannot decode (not UTF-8, ...); answered as a 422 instead.
_UNPARSED_BODY = "There was an error parsing the body"


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
    for module in (agents, sessions, events, ops):
        app.include_router(module.router)
    app.include_router(viewer_router())
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if auth_enforced(settings):
        app.add_middleware(
            BearerAuthMiddleware, authenticator=Authenticator(settings), protects=is_guarded
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
        for model in events.EVENT_MODELS:
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
                    if is_guarded(method.upper(), path):
                        operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI, client: aioredis.Redis) -> None:
    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        status = exc.http_status if isinstance(exc, RegistryError) else 422
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
    sock = bind_socket(host, port)
    log.info("registry serving", extra={"host": host, "port": port})
    await http.serve(create_app(settings), sock, graceful_shutdown_s=5)
