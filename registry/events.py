"""Per-session event log: who sent what to whom, in order, replayable (a Redis Stream)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel, Field

from registry import lua
from registry.errors import SessionNotFound
from registry.limits import check_count, check_stream_id
from registry.redis_client import bounded_block_ms, text
from registry.sessions import SessionState, SessionStore, check_session_id
from registry.streams import Entry, StreamHub, stream_entries

log = logging.getLogger(__name__)

#: Kinds the registry itself writes when a session ends; nothing follows them.
CLOSING_KINDS = frozenset({"session.released", "session.expired"})
_PREVIEW_BYTES = 1024


class SessionEvent(BaseModel):
    """One entry of a session's log. ``ts`` is epoch milliseconds (Redis server clock)."""

    id: str = Field(description="Stream id; resume strictly after it.")
    seq: int = Field(description="Position in the session, 1-based, without gaps.")
    ts: int
    sender: str
    recipient: str
    kind: str
    task_id: str | None = None
    payload: dict[str, Any] | None = None
    summary: str | None = None
    truncated: bool = Field(
        default=False,
        description="The payload was too large: `payload` holds its sha256 and size (and its "
        "passages when they fit), `summary` its first KiB.",
    )


class SessionLog(SessionStore):
    """Append to, read and follow session event logs."""

    async def append(
        self,
        session_id: str,
        *,
        sender: str,
        recipient: str,
        kind: str,
        task_id: str | None = None,
        payload: dict[str, Any] | None = None,
        summary: str | None = None,
    ) -> SessionEvent:
        """Add an event; payloads over ``max_event_payload_bytes`` are stored as a summary.

        Raises :class:`SessionNotFound` when the session does not exist.
        """
        check_session_id(session_id, existing=True)
        limit = self.settings.max_event_payload_bytes
        body = "" if payload is None else json.dumps(payload, separators=(",", ":"), default=str)
        truncated = False
        if len(body.encode()) > limit:
            log.warning(
                "event payload truncated",
                extra={"session_id": session_id, "kind": kind, "bytes": len(body.encode())},
            )
            summary = _clip(summary or body, min(limit, _PREVIEW_BYTES))
            body, truncated = _stand_in(payload or {}, body, limit), True
        elif summary is not None and len(summary.encode()) > limit:
            summary, truncated = _clip(summary, limit), True
        reply = await lua.APPEND(
            self.redis,
            [self.keys.session(session_id), self.keys.session_events(session_id)],
            [
                self.settings.events_maxlen,
                sender,
                recipient,
                kind,
                task_id or "",
                body,
                summary or "",
                "1" if truncated else "",
            ],
        )
        if reply is None:
            raise SessionNotFound(session_id)
        return SessionEvent(
            id=text(reply[0]),
            seq=int(reply[1]),
            ts=int(reply[2]),
            sender=sender,
            recipient=recipient,
            kind=kind,
            task_id=task_id,
            payload=json.loads(body) if body else None,
            summary=summary,
            truncated=truncated,
        )

    async def read(
        self, session_id: str, *, after: str | None = None, count: int = 1000
    ) -> list[SessionEvent]:
        """Up to ``count`` events after stream id ``after`` (exclusive; None: from the start)."""
        check_session_id(session_id, existing=True)
        check_count(count)
        start = _exclusive(after)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.session(session_id))
            pipe.xrange(self.keys.session_events(session_id), min=start, count=count)
            replies: Any = await pipe.execute()
        exists, entries = replies
        if not exists and not entries:
            raise SessionNotFound(session_id)
        return [_event(entry_id, fields) for entry_id, fields in entries]

    async def follow(
        self,
        session_id: str,
        *,
        after: str | None = None,
        block_ms: int = 5000,
        hub: StreamHub | None = None,
    ) -> AsyncGenerator[SessionEvent, None]:
        """Events after ``after`` as they arrive; ends once the session is closed and every
        event has been delivered.

        Without ``hub`` this holds one pooled connection in a blocking read for as long as
        it follows; with a :class:`~registry.streams.StreamHub` (the HTTP API) it holds none.
        """
        check_session_id(session_id, existing=True)
        last = after or "0-0"
        _exclusive(last)
        key = self.keys.session_events(session_id)
        session_key = self.keys.session(session_id)
        if not await self.redis.exists(session_key):
            raise SessionNotFound(session_id)
        batches = (
            hub.entries(key, last, idle_ms=block_ms)
            if hub is not None
            else self._blocking_reads(key, last, block_ms)
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                closing = False
                for entry_id, fields in batch:
                    event = _event(entry_id, fields)
                    last = event.id
                    closing = closing or event.kind in CLOSING_KINDS
                    yield event
                if batch and not closing:
                    continue
                if hub is not None:
                    state = await hub.read(lambda: self.redis.hget(session_key, "state"))
                else:
                    state = await self.redis.hget(session_key, "state")
                if state is not None and text(state) == SessionState.ACTIVE:
                    continue
                # Closed (or gone): deliver whatever arrived since, then stop.
                rest: Any = await self.redis.xrange(key, min=f"({last}")
                for entry_id, fields in rest:
                    yield _event(entry_id, fields)
                return

    async def _blocking_reads(
        self, key: str, last: str, block_ms: int
    ) -> AsyncGenerator[list[Entry], None]:
        """Batches read with ``XREAD BLOCK`` on a pooled connection (empty on a timeout)."""
        block = bounded_block_ms(self.redis, block_ms)
        while True:
            reply: Any = await self.redis.xread({key: last}, count=500, block=block)
            batch = stream_entries(reply)
            if batch:
                last = batch[-1][0]
            yield batch


def _exclusive(after: str | None) -> str:
    """The XRANGE start strictly after ``after`` (None: from the start)."""
    if after is None:
        return "-"
    check_stream_id(after)
    return f"({after}"


def _stand_in(payload: dict[str, Any], body: str, limit: int) -> str:
    """What is kept of an oversize payload: its SHA-256 and size, plus its passages when
    they fit (a replay can reuse the passages; the hash tells whether a rerun matches)."""
    data = body.encode()
    kept: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    passages = payload.get("passages")
    if passages is not None:
        with_passages = json.dumps({**kept, "passages": passages}, separators=(",", ":"))
        if len(with_passages.encode()) <= limit:
            return with_passages
    return json.dumps(kept, separators=(",", ":"))


def _clip(value: str, limit: int) -> str:
    data = value.encode()
    if len(data) <= limit:
        return value
    return data[: limit - 3].decode(errors="ignore") + "…"


def _event(entry_id: Any, raw: dict[Any, Any]) -> SessionEvent:
    fields = {text(k): text(v) for k, v in raw.items()}
    payload = fields.get("payload")
    return SessionEvent(
        id=text(entry_id),
        seq=int(fields.get("seq", 0)),
        ts=int(fields.get("ts", 0)),
        sender=fields.get("from", ""),
        recipient=fields.get("to", ""),
        kind=fields.get("kind", ""),
        task_id=fields.get("task_id"),
        payload=json.loads(payload) if payload else None,
        summary=fields.get("summary"),
        truncated=fields.get("truncated") == "1",
    )
