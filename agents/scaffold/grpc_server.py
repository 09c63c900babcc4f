"""gRPC beside HTTP: the SDK's ``GrpcHandler`` over the agent's one request handler.

gRPC shares the HTTP port (connections opening with the HTTP/2 preface are handed to it), or
listens on a port of its own when ``grpc_port`` is set. It is served while the app runs:
:meth:`GrpcEndpoint.start` at startup, :meth:`GrpcEndpoint.stop` on shutdown, which takes no
new calls and gives running ones ``graceful_shutdown_s``. Calls carry the same bearer
credential as HTTP (unless SCRIPTORIUM_AUTH=off), and ``a2a-version`` metadata like HTTP's
``A2A-Version`` header (absent means 0.3, which is refused with VersionNotSupported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import (
    DefaultGrpcServerCallContextBuilder,
    GrpcHandler,
    RequestHandler,
)
from a2a.server.routes.common import StarletteUser
from a2a.types import a2a_pb2_grpc
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import VersionNotSupportedError
from packaging.version import InvalidVersion, Version
from starlette.authentication import AuthCredentials
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agents.scaffold.settings import AgentSettings
from protocol.auth import Authenticator, AuthError
from protocol.auth import enforced as auth_enforced

log = logging.getLogger(__name__)
AUTHORIZATION = "authorization"


class GrpcEndpoint:
    """The gRPC interface of one agent instance, served between :meth:`start` and :meth:`stop`.

    By default it shares the HTTP port: the agent's gRPC server listens on a private Unix
    socket and the HTTP server (:meth:`http_protocol`) hands it every connection that opens
    with the HTTP/2 preface, so the card's three interfaces share one origin. With
    ``grpc_port`` set it listens on that port of its own instead (reserved now, so the card
    can name it).
    """

    def __init__(self, settings: AgentSettings, base_url: str) -> None:
        self._settings = settings
        self._server: grpc.aio.Server | None = None
        self._reservation: socket.socket | None = None
        self._socket_dir: tempfile.TemporaryDirectory[str] | None = None
        if settings.grpc_port is None:
            self.url = base_url
            self._socket_dir = tempfile.TemporaryDirectory(prefix="scriptorium-grpc-")
            self.internal_address = f"unix:{self._socket_dir.name}/grpc.sock"
            return
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        # Held, not listening, until start(): the port is ours and the card can name it.
        self._reservation = socket.socket(family, socket.SOCK_STREAM)
        self._reservation.bind((settings.host, settings.grpc_port))
        port = self._reservation.getsockname()[1]
        self.url = f"http://{_shown(settings.public_host)}:{port}"
        self.internal_address = f"{_shown(settings.host)}:{port}"

    @property
    def http_protocol(self) -> type[asyncio.Protocol] | str:
        """What uvicorn should serve HTTP with (``http=``): gRPC rides along unless apart."""
        return one_port_protocol(self) if self._socket_dir is not None else "auto"

    async def start(self, handler: RequestHandler) -> None:
        """Serve ``handler`` (in the running event loop)."""
        settings = self._settings
        authenticator = Authenticator(settings) if auth_enforced(settings) else None
        server = grpc.aio.server(
            interceptors=[BearerAuth(authenticator)] if authenticator is not None else None,
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(
            GrpcHandler(handler, context_builder=VersionedContextBuilder(authenticator)), server
        )
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        if server.add_insecure_port(self.internal_address) == 0:
            raise OSError(
                f"gRPC could not bind {self.internal_address}; set SCRIPTORIUM_GRPC_PORT "
                "to a free port"
            )
        await server.start()
        self._server = server
        log.info("gRPC serving", extra={"url": self.url})

    async def stop(self, grace_s: float) -> None:
        """Take no new calls; give running ones ``grace_s``, then cancel them."""
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._socket_dir is not None:
            self._socket_dir.cleanup()


class VersionedContextBuilder(DefaultGrpcServerCallContextBuilder):
    """The SDK's call context plus what HTTP has: the metadata as ``state["headers"]`` (where
    the resume cursor and the caller's ``traceparent`` are read, as for HTTP), the caller
    (``user``, and its roles as ``state["auth"]``, as the HTTP middleware sets them), and a
    VersionNotSupported error for any A2A version but 1.x (the HTTP routes' rule)."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self._authenticator = authenticator

    def build(self, context: grpc.aio.ServicerContext[Any, Any]) -> ServerCallContext:
        """The call context of one gRPC call (the SDK calls this hook by this name)."""
        call = super().build(context)
        headers = {
            key.lower(): value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        # The credential stops here, as on HTTP (a2a-sdk logs a call's headers at DEBUG).
        sent = headers.pop(AUTHORIZATION, None)
        call.state["headers"] = headers
        if self._authenticator is not None:
            # The interceptor refused calls without valid credentials: this one has them.
            with contextlib.suppress(AuthError):
                principal = self._authenticator.authenticate(sent)
                call.user = StarletteUser(principal)
                call.state["auth"] = AuthCredentials(sorted(principal.roles))
        version = headers.get(VERSION_HEADER.lower()) or PROTOCOL_VERSION_0_3
        if not _supported(version):
            raise VersionNotSupportedError(
                message=f"A2A version '{version}' is not supported; send metadata "
                f"{VERSION_HEADER.lower()}: {PROTOCOL_VERSION_1_0}"
            )
        return call


def _supported(version: str) -> bool:
    try:
        return Version(version).major == Version(PROTOCOL_VERSION_1_0).major
    except InvalidVersion:
        return False


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses calls (UNAUTHENTICATED) without valid ``authorization: Bearer <credential>``
    metadata, checked by the same :class:`~protocol.auth.Authenticator` as HTTP."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        sent = dict(handler_call_details.invocation_metadata or ()).get(AUTHORIZATION)
        try:
            self._authenticator.authenticate(sent)
        except AuthError as exc:
            return _refusal(handler, str(exc).replace("Authorization:", "metadata authorization:"))
        return handler


def _refusal(handler: grpc.RpcMethodHandler, detail: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


#: What every HTTP/2 connection (so every gRPC channel without TLS) starts with.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def one_port_protocol(endpoint: GrpcEndpoint) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol, handing connections that open with HTTP/2 to gRPC.

    gRPC then shares the HTTP port, so every interface in the card has the card's origin
    (clients such as ADK's refuse a card fetched from one origin that points elsewhere).
    """

    class OnePortProtocol(HttpToolsProtocol):
        """Decides on a connection's first bytes: HTTP/1.1 stays, HTTP/2 goes to gRPC."""

        _pending: asyncio.Transport | None = None
        _head = b""
        _pipe: _Pipe | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._pending = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            if self._pending is None:
                if self._pipe is not None:
                    self._pipe.to_upstream(data)
                else:
                    super().data_received(data)
                return
            self._head += data
            size = min(len(self._head), len(HTTP2_PREFACE))
            if self._head[:size] != HTTP2_PREFACE[:size]:
                self._become_http()
            elif size == len(HTTP2_PREFACE):
                transport, self._pending = self._pending, None
                self._pipe = _Pipe(transport, endpoint.internal_address, self._head)

        def _become_http(self) -> None:
            transport, head = self._pending, self._head
            self._pending, self._head = None, b""
            super().connection_made(transport)  # type: ignore[arg-type]
            super().data_received(head)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._pipe is not None:
                self._pipe.close()
            elif self._pending is None:
                super().connection_lost(exc)

        def eof_received(self) -> None:
            if self._pipe is None and self._pending is None:
                super().eof_received()

        def pause_writing(self) -> None:
            if self._pipe is not None:
                self._pipe.pause_upstream()
            elif self._pending is None:
                super().pause_writing()

        def resume_writing(self) -> None:
            if self._pipe is not None:
                self._pipe.resume_upstream()
            elif self._pending is None:
                super().resume_writing()

    return OnePortProtocol


class _Pipe(asyncio.Protocol):
    """Bytes both ways between a client connection and the agent's own gRPC server."""

    def __init__(self, client: asyncio.Transport, address: str, head: bytes) -> None:
        self._client = client
        self._upstream: asyncio.Transport | None = None
        self._backlog = [head]
        client.pause_reading()
        loop = asyncio.get_running_loop()
        self._opening = loop.create_task(self._open(loop, address))

    async def _open(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        try:
            await loop.create_unix_connection(lambda: self, address.removeprefix("unix:"))
        except OSError as exc:
            log.warning("gRPC connection not passed on", extra={"error": str(exc)})
            self._client.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        upstream = self._upstream = transport
        for chunk in self._backlog:
            upstream.write(chunk)
        self._backlog.clear()
        self._client.resume_reading()

    def to_upstream(self, data: bytes) -> None:
        if self._upstream is None:
            self._backlog.append(data)
        else:
            self._upstream.write(data)

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def pause_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def pause_writing(self) -> None:
        self._client.pause_reading()

    def resume_writing(self) -> None:
        self._client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()

    def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        else:
            self._opening.cancel()
