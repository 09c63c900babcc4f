"""What every Scriptorium HTTP server shares (agents and registry): middleware and serving.

The middleware is pure ASGI rather than ``BaseHTTPMiddleware``: it sits on every A2A hop, and
the base class costs most of a millisecond per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import uvicorn
from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
    """Serve an ASGI app (with its lifespan) on ``sock`` in this event loop while inside."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
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
