"""A2A errors over HTTP: each answered with the status the spec gives it, logged as one line
when it is the client's mistake."""

from __future__ import annotations

import json
import logging

from a2a.utils.errors import A2AError, InternalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import RETRY_AFTER_KEY, RETRYABLE_REASONS

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
    "AGENT_BUSY": 503,
    "TASK_STORE_UNAVAILABLE": 503,
    "PERMISSION_DENIED": 403,
}


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
            status, content, retry_after = _a2a_status(start["status"], bytes(body))
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(content)).encode()))
            if retry_after is not None:
                headers.append((b"retry-after", retry_after.encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, restatus)


def _a2a_status(status: int, body: bytes) -> tuple[int, bytes, str | None]:
    """The status (and body) an error response should have by its A2A reason, and the
    ``Retry-After`` of a retryable one (busy, task store unavailable)."""
    try:
        payload = json.loads(body)
        error = payload["error"]
        infos = [d for d in error.get("details", ()) if isinstance(d, dict)]
        reasons = [d.get("reason") for d in infos]
    except (ValueError, TypeError, KeyError, AttributeError):
        return status, body, None
    retry_after = next(
        (
            str(d.get("metadata", {}).get(RETRY_AFTER_KEY))
            for d in infos
            if d.get("reason") in RETRYABLE_REASONS
            and isinstance(d.get("metadata"), dict)
            and RETRY_AFTER_KEY in d["metadata"]
        ),
        None,
    )
    wanted = next((A2A_HTTP_STATUS[r] for r in reasons if r in A2A_HTTP_STATUS), status)
    if wanted == status:
        return status, body, retry_after
    error["code"] = wanted
    return wanted, json.dumps(payload).encode(), retry_after


#: a2a-sdk loggers that report a client's mistakes (and our retryable errors) at ERROR with a
#: traceback; :func:`quiet_client_errors` turns those into one WARNING line.
SDK_REQUEST_LOGGERS = (
    "a2a.server.routes.jsonrpc_dispatcher",
    "a2a.server.routes.rest_dispatcher",
    "a2a.server.agent_execution.active_task",
    "a2a.server.request_handlers.grpc_handler",
    "a2a.utils.error_handlers",
)
#: The JSON-RPC dispatcher logs these with a traceback, then the same error again as one
#: WARNING line ("Request Error ... Code=-32602 ... Data={'parseError': ...}").
_LOGGED_TWICE = frozenset(
    {"Failed to validate base JSON-RPC request", "Failed to parse request params"}
)


class ClientErrorLogFilter(logging.Filter):
    """Client errors are the client's business: one WARNING line each, no traceback.

    Drops the JSON-RPC dispatcher's traceback of a request it could not parse (its own
    one-line warning follows), and logs a record carrying an A2A error other than an
    internal one (InvalidParams, TaskNotFound, busy, task store unavailable, ...) as one
    WARNING line naming the error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _LOGGED_TWICE:
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, A2AError) and not isinstance(error, InternalError):
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_CLIENT_ERROR_FILTER = ClientErrorLogFilter()


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorLogFilter` on a2a-sdk's request loggers (idempotent)."""
    for name in SDK_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _CLIENT_ERROR_FILTER not in logger.filters:
            logger.addFilter(_CLIENT_ERROR_FILTER)
