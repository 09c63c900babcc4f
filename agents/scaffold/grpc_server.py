"""gRPC beside HTTP: the SDK's ``GrpcHandler`` over the agent's one request handler.

The port is reserved when the app is built (its URL goes into the card) and served while
the app runs: :meth:`GrpcEndpoint.start` at startup, :meth:`GrpcEndpoint.stop` on shutdown,
which takes no new calls and gives running ones ``graceful_shutdown_s``. Calls carry the
same bearer token as HTTP when one is configured, and ``a2a-version`` metadata like HTTP's
``A2A-Version`` header (absent means 0.3, which is refused with VersionNotSupported).
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import (
    DefaultGrpcServerCallContextBuilder,
    GrpcHandler,
    RequestHandler,
)
from a2a.types import a2a_pb2_grpc
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import VersionNotSupportedError
from packaging.version import InvalidVersion, Version

from agents.scaffold.settings import AgentSettings

log = logging.getLogger(__name__)
AUTHORIZATION = "authorization"


class GrpcEndpoint:
    """The gRPC port of one agent instance: reserved now, served between start and stop."""

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        # Held, not listening, until start(): the port is ours and the card can name it.
        self._reservation: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        self._reservation.bind((settings.host, settings.grpc_port or 0))
        self.port: int = self._reservation.getsockname()[1]
        self.url = f"http://{_shown(settings.public_host)}:{self.port}"
        self._server: grpc.aio.Server | None = None

    async def start(self, handler: RequestHandler) -> None:
        """Serve ``handler`` on the reserved port (in the running event loop)."""
        settings = self._settings
        token = settings.token.get_secret_value() if settings.token is not None else None
        server = grpc.aio.server(
            interceptors=[BearerAuth(token)] if token is not None else None,
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(
            GrpcHandler(handler, context_builder=VersionedContextBuilder()), server
        )
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        address = f"{_shown(settings.host)}:{self.port}"
        if server.add_insecure_port(address) != self.port:
            raise OSError(f"gRPC could not bind {address}; set SCRIPTORIUM_GRPC_PORT to a free one")
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


class VersionedContextBuilder(DefaultGrpcServerCallContextBuilder):
    """The SDK's call context plus what HTTP has: the metadata as ``state["headers"]``, and a
    VersionNotSupported error for any A2A version but 1.x (the HTTP routes' rule)."""

    def build(self, context: grpc.aio.ServicerContext[Any, Any]) -> ServerCallContext:
        call = super().build(context)
        headers = {
            key.lower(): value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        call.state["headers"] = headers
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
    """Refuses calls (UNAUTHENTICATED) without ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get(AUTHORIZATION, "")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if handler is None or hmac.compare_digest(sent_bytes, self._expected):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""
    detail = (
        "missing or wrong bearer token; send metadata authorization: Bearer <SCRIPTORIUM_TOKEN>"
    )

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
