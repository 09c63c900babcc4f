"""Plain ASGI middleware shared by every Scriptorium HTTP server (agents and registry).

Pure ASGI rather than ``BaseHTTPMiddleware``: it sits on every A2A hop, and the base class
costs most of a millisecond per request.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

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
