"""Scriptorium's own A2A errors: "come back later" answers every binding understands.

a2a-sdk 1.3 maps an error to its JSON-RPC code, HTTP status, gRPC status and ``ErrorInfo``
reason through a few tables keyed by the error's class; a class missing from them is
answered as an internal error (-32603 / 500 / ``UNKNOWN``). :func:`register` adds ours to
those tables (server and client side), so an agent that is busy or whose task store is
unreachable answers a clear, retryable error on JSON-RPC, HTTP+JSON and gRPC alike, and an
SDK client in a process that imported this module raises the same class.

======================================  ========  ==========  ===========  =======================
error                                   JSON-RPC  HTTP+JSON   gRPC         ``ErrorInfo.reason``
======================================  ========  ==========  ===========  =======================
:class:`AgentBusyError`                 -32050    503         UNAVAILABLE  AGENT_BUSY
:class:`TaskStoreUnavailableError`      -32051    503         UNAVAILABLE  TASK_STORE_UNAVAILABLE
======================================  ========  ==========  ===========  =======================

HTTP+JSON answers carry ``Retry-After``.
Both carry the seconds to wait in ``ErrorInfo.metadata.retryAfterSeconds`` (a string, as
``ErrorInfo`` metadata is) and say it in their message.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from a2a.client.transports import jsonrpc as _client_jsonrpc
from a2a.server.jsonrpc_models import JSONRPCError
from a2a.server.request_handlers import grpc_handler as _grpc_handler
from a2a.server.request_handlers import response_helpers as _response_helpers
from a2a.utils import errors as _errors
from a2a.utils.errors import A2AError, ErrorMapping

#: ``ErrorInfo.metadata`` key holding how many seconds to wait before retrying.
RETRY_AFTER_KEY = "retryAfterSeconds"


class RetryableError(A2AError):
    """An error that goes away by itself: the client should retry after a while."""

    @property
    def retry_after_s(self) -> int | None:
        """Seconds to wait before retrying, when the server said."""
        value = (self.data or {}).get(RETRY_AFTER_KEY)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None


class AgentBusyError(RetryableError):
    """The agent runs as many tasks as it takes (its card's capacity): retry later."""

    message = "busy: retry later"


class TaskStoreUnavailableError(RetryableError):
    """The agent cannot reach its task store (Redis): retry later."""

    message = "the task store (Redis) is unreachable; retry later"


class PermissionDeniedError(A2AError):
    """The caller is authenticated but may not do this (an operator-only skill)."""

    message = "permission denied"


def retry_after(seconds: float) -> dict[str, Any]:
    """The ``data`` of a retryable error: whole seconds, at least one."""
    return {RETRY_AFTER_KEY: str(max(1, math.ceil(seconds)))}


def agent_busy(in_flight: int, retry_after_s: float) -> AgentBusyError:
    """The busy answer: how many tasks run, and when to come back."""
    data = retry_after(retry_after_s)
    return AgentBusyError(
        f"busy: {in_flight} tasks in flight, retry in {data[RETRY_AFTER_KEY]} s", data
    )


def task_store_unavailable(waited_s: float, retry_after_s: float) -> TaskStoreUnavailableError:
    """The answer when Redis did not respond in time."""
    data = retry_after(retry_after_s)
    return TaskStoreUnavailableError(
        f"the task store (Redis) is unreachable (no answer within {waited_s:g} s); nothing "
        f"was stored for this request: retry in {data[RETRY_AFTER_KEY]} s",
        data,
    )


_OURS: dict[type[A2AError], tuple[int, int, grpc.StatusCode, str]] = {
    AgentBusyError: (-32050, 503, grpc.StatusCode.UNAVAILABLE, "AGENT_BUSY"),
    TaskStoreUnavailableError: (-32051, 503, grpc.StatusCode.UNAVAILABLE, "TASK_STORE_UNAVAILABLE"),
    PermissionDeniedError: (-32060, 403, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
}
#: ErrorInfo reasons of the retryable errors (the HTTP middleware adds ``Retry-After``).
RETRYABLE_REASONS = frozenset(
    _OURS[error][3] for error in (AgentBusyError, TaskStoreUnavailableError)
)


def register() -> None:
    """Add our errors to a2a-sdk's error tables (idempotent; done on import)."""
    for cls, (code, http_status, grpc_status, reason) in _OURS.items():
        _errors.JSON_RPC_ERROR_CODE_MAP[cls] = code
        _errors.A2A_ERROR_MAPPING[cls] = ErrorMapping(http_status, grpc_status.name, reason)
        _errors.A2A_ERROR_REASONS[cls] = reason
        _errors.A2A_REASON_TO_ERROR[reason] = cls
        _response_helpers.EXCEPTION_MAP[cls] = JSONRPCError
        _grpc_handler._ERROR_CODE_MAP[cls] = grpc_status
        _client_jsonrpc._JSON_RPC_ERROR_CODE_TO_A2A_ERROR[code] = cls


register()
