"""The event streams (Server-Sent Events): a session's event log and the change feed.

Each open stream holds a slot (:class:`~registry.streams.StreamSlots`) until it ends; one
more than the caps allow is answered 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from registry.errors import RegistryError
from registry.events import SessionEvent
from registry.limits import STREAM_ID_PARAM_PATTERN
from registry.records import Change
from registry.routes.common import ERROR_RESPONSES, Absent, ErrorBody, Services, ServicesDep
from registry.streams import StreamEnded

log = logging.getLogger(__name__)

_SSE_PING_S = 15
_PAGE = 1000
#: The models SSE ``data`` carries (``registry.api`` adds them to the schema's components).
EVENT_MODELS: tuple[type[BaseModel], ...] = (Change, SessionEvent)
router = APIRouter(responses=ERROR_RESPONSES)
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many open streams (in all, or from this address); see Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
}


def _event_stream(
    path: str, model: type[BaseModel], tag: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The decorator of an SSE route at ``path`` whose events carry ``model``s."""
    return router.get(
        path, response_class=EventSourceResponse, tags=[tag], responses=_sse_responses(model)
    )


def _sse_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The answers of an SSE route, each event's ``data`` a JSON ``model``."""
    name = model.__name__
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Stream id: resume after it (Last-Event-ID)."},
            "event": {"type": "string", "description": "The kind."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{name}"},
            },
        },
        "required": ["id", "event", "data"],
    }
    return {
        200: {
            "description": f"Server-Sent Events (one schema per event); each `data` is a {name}.",
            "content": {"text/event-stream": {"schema": event}},
        },
        **_STREAM_ERRORS,
    }


#: Constraints sit on the ``str`` itself: on the optional union they would be enforced but
#: left out of the schema.
StreamIdText = Annotated[str, Field(pattern=STREAM_ID_PARAM_PATTERN)]
StreamId = Annotated[
    StreamIdText | Absent,
    Query(
        description="Resume strictly after this stream id (empty: from the start).",
    ),
]
LastEventId = Annotated[
    StreamIdText | Absent,
    Header(
        description="Resume strictly after this id; wins over `after` (empty: not given).",
    ),
]


@_event_stream("/sessions/{session_id}/events", SessionEvent, tag="sessions")
async def session_events(
    session_id: str,
    svc: ServicesDep,
    request: Request,
    after: StreamId = None,
    follow: Annotated[bool, Query(description="Keep streaming until the session ends.")] = True,
    last_event_id: LastEventId = None,
) -> Response:
    """The session's event log as Server-Sent Events (``id`` = stream id, ``event`` = kind).

    Honours ``Last-Event-ID`` (it wins over ``after``) by resuming strictly after it.
    """
    start = last_event_id or after or None  # empty: not given
    first = await svc.log.read(session_id, after=start, count=_PAGE)  # 404 before streaming
    refused = _stream_refused(request, svc)  # checked and taken with no await in between
    if refused is not None:
        return refused

    async def stream() -> AsyncIterator[ServerSentEvent]:
        page, last = first, start
        try:
            while page:
                for event in page:
                    yield _sse(event.id, event.kind, event.model_dump_json())
                last = page[-1].id
                if len(page) < _PAGE:
                    break
                page = await svc.log.read(session_id, after=last, count=_PAGE)
            if follow:
                async for event in svc.log.follow(session_id, after=last, hub=svc.hub):
                    yield _sse(event.id, event.kind, event.model_dump_json())
        except (RedisError, RegistryError, StreamEnded) as exc:
            log.warning(
                "session event stream ended early",
                extra={"session_id": session_id, "error": str(exc)},
            )

    return _open_stream(request, svc, stream())


@_event_stream("/changes", Change, tag="agents")
async def changes(
    svc: ServicesDep,
    request: Request,
    after: Annotated[
        StreamIdText | Absent,
        Query(
            description="Resume strictly after this id ('0' for everything).",
        ),
    ] = None,
    last_event_id: LastEventId = None,
) -> Response:
    """The registry's change feed as Server-Sent Events (new changes only by default)."""
    start = last_event_id or after or "$"
    refused = _stream_refused(request, svc)
    if refused is not None:
        return refused

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for change in svc.registry.watch(start, hub=svc.hub):
                yield _sse(change.id, change.kind, change.model_dump_json())
        except (RedisError, StreamEnded) as exc:
            log.warning("change stream ended early", extra={"error": str(exc)})

    return _open_stream(request, svc, stream())


def _sse(event_id: str, kind: str, data: str) -> ServerSentEvent:
    return ServerSentEvent(data=data, id=event_id, event=kind)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _stream_refused(request: Request, svc: Services) -> JSONResponse | None:
    """A 429 when another stream would exceed ``max_streams`` or ``max_streams_per_client``."""
    reason = svc.slots.refusal(_client(request))
    if reason is None:
        return None
    retry = svc.settings.stream_retry_after_s
    log.warning("event stream refused", extra={"client": _client(request), "reason": reason})
    return JSONResponse(
        {"detail": f"{reason}: close a stream or retry in {retry} s"},
        status_code=429,
        headers={"Retry-After": str(retry)},
    )


class _HeldStream(EventSourceResponse):
    """An SSE response that gives its stream slot back however it ends."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], release: Callable[[], None]):
        super().__init__(content, ping=_SSE_PING_S)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _open_stream(
    request: Request, svc: Services, content: AsyncIterator[ServerSentEvent]
) -> Response:
    return _HeldStream(content, svc.slots.take(_client(request)))
