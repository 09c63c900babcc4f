"""What every Scriptorium HTTP server shares (agents and registry): request guards, bearer
auth and serving. Agents add :mod:`protocol.card_routes` and :mod:`protocol.error_status`.

The middleware is pure ASGI rather than ``BaseHTTPMiddleware``: it sits on every A2A hop, and
the base class costs most of a millisecond per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from array import array
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import uvicorn
from fastapi import HTTPException
from pydantic import SecretStr
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.auth import Authenticator, AuthError
from protocol.settings import CommonSettings

#: JSON-RPC codes of requests refused before parsing (JSON-RPC 2.0's own).
INVALID_REQUEST = -32600
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
A2A_DOMAIN = "a2a-protocol.org"


@dataclass(frozen=True)
class A2APaths:
    """Where an app serves A2A: the JSON-RPC endpoint and the HTTP+JSON prefix."""

    jsonrpc: str
    rest_prefix: str

    def binding(self, path: str) -> str | None:
        """``"jsonrpc"``, ``"rest"`` or None (not an A2A path)."""
        if path == self.jsonrpc:
            return "jsonrpc"
        if path == self.rest_prefix or path.startswith(self.rest_prefix + "/"):
            return "rest"
        return None


def a2a_error_response(
    binding: str, status: int, message: str, *, code: int = INVALID_REQUEST
) -> JSONResponse:
    """An error answered at the edge, in the shape of the binding's own errors.

    JSON-RPC: an error object with ``id`` null (the request was not read) and ``code``;
    HTTP+JSON: the SDK's ``{"error": {"code", "status", "message", "details"}}``.
    """
    if binding == "jsonrpc":
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": code, "message": message},
        }
    else:
        info = {"@type": ERROR_INFO_TYPE, "reason": "INVALID_REQUEST", "domain": A2A_DOMAIN}
        body = {
            "error": {
                "code": status,
                "status": "INVALID_ARGUMENT",
                "message": message,
                "details": [{**info, "metadata": {}}],
            }
        }
    return JSONResponse(body, status_code=status)


class BodyLimitMiddleware:
    """Answers 413 to request bodies larger than ``max_bytes`` (declared or streamed).

    On A2A paths (``a2a``) the answer is the binding's error (a JSON-RPC error object, an
    HTTP+JSON error); elsewhere ``{"detail": ...}``. A body that turns out too large while
    streaming raises a 413 HTTPException from ``receive`` (FastAPI answers it; on A2A paths
    :class:`A2ARequestGuard` does).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, a2a: A2APaths | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.a2a = a2a

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = too_large(self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            binding = self.a2a.binding(scope["path"]) if self.a2a is not None else None
            response = (
                a2a_error_response(binding, 413, detail)
                if binding is not None
                else JSONResponse({"detail": detail}, status_code=413)
            )
            await response(scope, receive, send)
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


def too_large(max_bytes: int) -> str:
    """What a 413 says."""
    return (
        f"request body larger than {max_bytes} bytes (SCRIPTORIUM_MAX_REQUEST_BYTES); send a "
        "smaller body or raise the limit"
    )


class A2ARequestGuard:
    """Refuses A2A requests (JSON-RPC, HTTP+JSON) before the SDK parses them: a body that
    is not JSON (415), larger than ``max_bytes`` (413) or nested deeper than ``max_depth``
    (400), each answered with the binding's error (:func:`a2a_error_response`).

    The body is read here, so its depth is known before any parser recurses into it (the
    SDK would answer a 10,000-level document with -32603 "maximum recursion depth
    exceeded"), then handed on unchanged. Requests without a body pass.
    """

    def __init__(self, app: ASGIApp, a2a: A2APaths, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.a2a = a2a
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        binding = self.a2a.binding(scope["path"]) if scope["type"] == "http" else None
        if binding is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or declared not in (None, b"0")
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if has_body and not is_json_media_type(content_type):
            refused = (
                f"Content-Type must be application/json, not {content_type[:80]!r}"
                if content_type
                else "Content-Type is missing; send application/json"
            )
            await a2a_error_response(binding, 415, refused)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left before sending its body
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    raise HTTPException(status_code=413)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            response = a2a_error_response(binding, 413, too_large(self.max_bytes))
            await response(scope, receive, send)
            return
        body = b"".join(chunks)
        if body and json_depth_exceeds(body, self.max_depth):
            refused = (
                f"JSON nested deeper than {self.max_depth} levels (SCRIPTORIUM_MAX_JSON_DEPTH); "
                "send a flatter body"
            )
            await a2a_error_response(binding, 400, refused)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


_MEDIA_TYPE = re.compile(r"application/(?:[A-Za-z0-9.!#$%&'*^_`|~-]+\+)?json", re.IGNORECASE)


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    return bool(_MEDIA_TYPE.fullmatch(content_type.split(";", 1)[0].strip()))


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` nests arrays/objects deeper than ``limit``.

    A scan without parsing, at C speed (about 100 ms for the worst 4 MB body): strings are
    cut out (an unterminated one runs to the end), the brackets left are counted as +1/-1
    steps and the deepest running sum is the depth. Invalid JSON is left to the parser.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    if re.search(rb"[\[{]{%d}" % (limit + 1), brackets):
        return True  # the usual attack: a long run of openers
    return max(accumulate(array("b", brackets.translate(_STEPS)))) > limit


class BearerAuthMiddleware:
    """Answers 401 unless a valid bearer credential is sent (some paths stay open).

    Credentials are checked by a :class:`~protocol.auth.Authenticator` (static keys, JWTs);
    ``token=`` alone accepts that one static key. The caller goes into the ASGI scope as
    ``user`` (a :class:`~protocol.auth.Principal`) and ``auth`` (its roles as scopes), where
    a2a-sdk's call context and FastAPI's ``request.user`` find it; the ``Authorization``
    header itself is not passed on. A refusal says what to send.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        *,
        authenticator: Authenticator | None = None,
        open_paths: Collection[str] = (),
        protects: Callable[[str, str], bool] | None = None,
    ) -> None:
        if authenticator is None:
            if token is None:
                raise ValueError("BearerAuthMiddleware needs a token or an authenticator")
            authenticator = Authenticator(CommonSettings.model_construct(token=SecretStr(token)))
        self.app = app
        self.authenticator = authenticator
        self.open_paths = frozenset(open_paths)
        self.protects = protects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"authorization")
        try:
            principal = self.authenticator.authenticate(sent)
        except AuthError as exc:
            response = JSONResponse(
                {"detail": str(exc)},
                status_code=exc.status,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        # The credential stops here: the app sees the caller, never the secret (a2a-sdk
        # logs a call's headers at DEBUG).
        headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        scope = {**scope, "headers": headers}
        scope["user"] = principal
        scope["auth"] = AuthCredentials(sorted(principal.roles))
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


def _server(app: Any, *, graceful_shutdown_s: float | None = None) -> uvicorn.Server:
    """The one uvicorn configuration every server of ours runs with.

    An app that names its HTTP protocol in ``app.state.http_protocol`` is served with it.
    """
    state = getattr(app, "state", None)
    http = getattr(state, "http_protocol", "auto") if state is not None else "auto"
    config = uvicorn.Config(
        app,
        http=http,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_shutdown_s) if graceful_shutdown_s else None,
    )
    return uvicorn.Server(config)


async def serve(app: Any, sock: socket.socket, *, graceful_shutdown_s: float | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM or cancellation, then shut down gracefully.

    In-flight requests get ``graceful_shutdown_s`` to finish (None: as long as they take).
    """
    server = _server(app, graceful_shutdown_s=graceful_shutdown_s)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise


@contextlib.asynccontextmanager
async def serving(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """Serve an ASGI app (with its lifespan) on ``sock`` in this event loop while inside."""
    server = _server(app)
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
