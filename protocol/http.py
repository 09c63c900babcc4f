"""What every Scriptorium HTTP server shares (agents and registry): middleware and serving.

The middleware is pure ASGI rather than ``BaseHTTPMiddleware``: it sits on every A2A hop, and
the base class costs most of a millisecond per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import uvicorn
from a2a.server.routes import create_agent_card_routes
from a2a.types import AgentCard
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.cards import CARD_PATH

#: How long clients and proxies may reuse a card without asking again.
CARD_CACHE_CONTROL = "public, max-age=60"
#: The HTTP status of each A2A error over HTTP+JSON, by its ErrorInfo reason: the table of
#: A2A v1.0 section 5.4 for the A2A errors, 400/404/500 for the JSON-RPC-style ones.
A2A_HTTP_STATUS: dict[str, int] = {
    "TASK_NOT_FOUND": 404,
    "TASK_NOT_CANCELABLE": 409,
    "PUSH_NOTIFICATION_NOT_SUPPORTED": 400,
    "UNSUPPORTED_OPERATION": 400,
    "CONTENT_TYPE_NOT_SUPPORTED": 415,
    "INVALID_AGENT_RESPONSE": 502,
    "EXTENDED_AGENT_CARD_NOT_CONFIGURED": 400,
    "EXTENSION_SUPPORT_REQUIRED": 400,
    "VERSION_NOT_SUPPORTED": 400,
    "INVALID_PARAMS": 400,
    "INVALID_REQUEST": 400,
    "METHOD_NOT_FOUND": 404,
    "INTERNAL_ERROR": 500,
}


class BodyLimitMiddleware:
    """Answers 413 to request bodies larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = (
            f"request body larger than {self.max_bytes} bytes; send a smaller body or raise "
            "SCRIPTORIUM_MAX_REQUEST_BYTES"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns HTTPExceptions raised while reading the body into responses.
                    raise HTTPException(status_code=413, detail=detail)
            return message

        await self.app(scope, limited_receive, send)


class BearerAuthMiddleware:
    """Answers 401 unless ``Authorization: Bearer <token>`` is sent (some paths stay open)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        *,
        open_paths: Collection[str] = (),
        protects: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.open_paths = frozenset(open_paths)
        self.protects = protects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(sent, self.expected):
            response = JSONResponse(
                {
                    "detail": "missing or wrong bearer token; send Authorization: Bearer "
                    "<SCRIPTORIUM_TOKEN>"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _guarded(self, method: str, path: str) -> bool:
        if path in self.open_paths:
            return False
        return self.protects(method, path) if self.protects is not None else True


class A2AErrorStatusMiddleware:
    """Gives every A2A error answered under ``prefix`` (HTTP+JSON) its status from
    :data:`A2A_HTTP_STATUS`, in the status line and in the body's ``error.code``.

    a2a-sdk 1.3 answers 400 for TaskNotCancelable (the spec: 409) and ContentTypeNotSupported
    (415), and 500 for InvalidAgentResponse (502). Only error responses are looked at.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def restatus(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held until the body says which error this is
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, content = _a2a_status(start["status"], bytes(body))
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(content)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, restatus)


def _a2a_status(status: int, body: bytes) -> tuple[int, bytes]:
    """The status (and body) an error response should have by its A2A reason."""
    try:
        payload = json.loads(body)
        error = payload["error"]
        reasons = [d.get("reason") for d in error.get("details", ()) if isinstance(d, dict)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return status, body
    wanted = next((A2A_HTTP_STATUS[r] for r in reasons if r in A2A_HTTP_STATUS), status)
    if wanted == status:
        return status, body
    error["code"] = wanted
    return wanted, json.dumps(payload).encode()


def card_routes(card: AgentCard, *, cache_control: str = CARD_CACHE_CONTROL) -> list[Route]:
    """The route serving ``card``: the SDK's (ETag, 304 on If-None-Match, Cache-Control)
    plus ``Last-Modified`` (now: when the card was built) and 304 on If-Modified-Since."""
    built = datetime.now(UTC).replace(microsecond=0)
    last_modified = format_datetime(built, usegmt=True)
    [sdk_route] = create_agent_card_routes(card, card_url=CARD_PATH, cache_control=cache_control)
    serve_card = sdk_route.endpoint

    async def endpoint(request: Request) -> Response:
        response: Response = await serve_card(request)
        response.headers["Last-Modified"] = last_modified
        # If-None-Match, when sent, decides alone (RFC 9110 13.1.3).
        since = request.headers.get("if-modified-since")
        fresh = since is not None and "if-none-match" not in request.headers
        if response.status_code == 200 and fresh and _not_modified(str(since), built):
            kept = {k: v for k, v in response.headers.items() if k != "content-length"}
            return Response(status_code=304, headers=kept)
        return response

    return [Route(CARD_PATH, endpoint, methods=["GET"])]


def _not_modified(since: str, modified: datetime) -> bool:
    """Whether ``modified`` is no later than an If-Modified-Since date (invalid: ignored)."""
    try:
        date = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return modified <= date


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn; port 0 picks a free one (read it from the socket).

    Created with ``IPPROTO_TCP`` explicitly: asyncio only sets TCP_NODELAY on sockets that
    say so, and without it every keep-alive request waits ~40 ms for a delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return f"http://{shown}:{port}"


@contextlib.asynccontextmanager
async def serving(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """Serve an ASGI app (with its lifespan) on ``sock`` in this event loop while inside.

    An app that names its HTTP protocol in ``app.state.http_protocol`` is served with it.
    """
    state = getattr(app, "state", None)
    http = getattr(state, "http_protocol", "auto") if state is not None else "auto"
    config = uvicorn.Config(app, http=http, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def running(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop (port 0: a free one); yields its base URL."""
    sock = bind_socket(host, port)
    async with serving(app, sock):
        yield socket_url(sock)
