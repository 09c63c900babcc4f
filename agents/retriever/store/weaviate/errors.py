"""Weaviate client failures as the store's errors, each saying what to do next."""

from __future__ import annotations

import httpx
from grpc import StatusCode
from grpc.aio import AioRpcError

from protocol.extras import extra

with extra("retrieval", feature="the Weaviate store"):
    from weaviate.exceptions import (
        InsufficientPermissionsError,
        UnexpectedStatusCodeError,
        WeaviateBaseError,
        WeaviateClosedClientError,
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateRetryError,
        WeaviateStartUpError,
        WeaviateTimeoutError,
    )

from agents.retriever.store.base import StoreError, StoreUnavailable

#: Client failures that mean "the server cannot be reached" (not "it refused").
UNREACHABLE = (
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
    WeaviateRetryError,
    WeaviateClosedClientError,
    httpx.TransportError,
    OSError,
)


def translate(exc: BaseException, what: str, *, where: str, url: str) -> BaseException:
    """A client failure while doing ``what`` as StoreUnavailable / StoreError.

    ``where`` names the server in messages; ``url`` is its REST address. Anything that is
    not a client failure comes back unchanged.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(
            f"{where} did not answer ({what}) in time; check the server is up and "
            "not overloaded, and that WEAVIATE_URL points at it"
        )
    code = rpc_code(exc)
    if (
        isinstance(exc, InsufficientPermissionsError)
        or _status(exc) in (401, 403)
        or code in (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED)
    ):
        return StoreError(
            f"{where} refused to {what}: not authorised; check WEAVIATE_API_KEY ({brief(exc)})"
        )
    if isinstance(exc, WeaviateStartUpError) and "is not supported" in str(exc):
        return StoreError(f"{brief(exc)} Upgrade the Weaviate server at {url}.")
    if isinstance(exc, UNREACHABLE) or code in (
        StatusCode.UNAVAILABLE,
        StatusCode.DEADLINE_EXCEEDED,
    ):
        return StoreUnavailable(
            f"cannot reach {where} ({what}): {brief(exc)}; check WEAVIATE_URL "
            "and SCRIPTORIUM_WEAVIATE_GRPC_PORT, and that the server is up"
        )
    if isinstance(exc, WeaviateBaseError):
        return StoreError(f"{where} failed to {what}: {brief(exc)}")
    return exc


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, UnexpectedStatusCodeError):
        return exc.status_code
    return None


def rpc_code(exc: BaseException) -> StatusCode | None:
    """The gRPC status behind a client exception (it wraps AioRpcError as cause or context)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, AioRpcError):
            code: StatusCode = seen.code()
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def brief(exc: BaseException) -> str:
    """The exception message on one line, cut to 300 characters."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
