"""What happened to an answer, from the registry's session log alone: list, show, export.

A :class:`Recording` is a session (roles, bindings, times, trace id) and its event log, as
the registry keeps them; no agent needs to be up to read one. It is shown as a timeline
(offset from the first event, sender → recipient, kind, summary, task id, duration),
replayed with its original timing scaled, and exported as JSON or JSON Lines that import
back unchanged on another machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from rich.markup import escape
from rich.table import Table

from registry.client import RegistryClient
from registry.events import SessionEvent
from registry.sessions import Session

FORMAT: Literal["scriptorium.recording/1"] = "scriptorium.recording/1"


class Recording(BaseModel):
    """One session and its event log, as recorded."""

    format: Literal["scriptorium.recording/1"] = FORMAT
    session: Session | None = Field(
        default=None, description="None when only the log was kept (or it was imported so)."
    )
    events: list[SessionEvent]


class Step(BaseModel):
    """One line of a timeline."""

    n: int
    offset_ms: int = Field(description="Since the session's first event.")
    sender: str
    recipient: str
    kind: str
    summary: str
    task_id: str | None
    duration_ms: float | None = Field(description="What a result or failure reports it took.")


async def read_recording(registry: RegistryClient, session_id: str) -> Recording | None:
    """A session and its whole log, read from the registry's HTTP API (None: not kept)."""
    events = await registry.session_events(session_id)
    if events is None:
        return None
    return Recording(session=await registry.session(session_id), events=events)


def timeline(recording: Recording) -> list[Step]:
    """The recording's events as steps, in log order."""
    events = recording.events
    start = events[0].ts if events else 0
    return [
        Step(
            n=event.seq,
            offset_ms=event.ts - start,
            sender=event.sender,
            recipient=event.recipient,
            kind=event.kind,
            summary=describe(event),
            task_id=event.task_id,
            duration_ms=_duration(event),
        )
        for event in events
    ]


def timeline_table(recording: Recording) -> Table:
    """A Rich table of the timeline (every string from the log escaped)."""
    session = recording.session
    title = (
        f"session {session.id} · {session.state} · trace {session.trace_id}"
        if session
        else "session (log only)"
    )
    table = Table(title=escape(title), expand=False)
    for column in ("#", "offset", "from → to", "kind", "summary", "task", "took"):
        table.add_column(column, overflow="fold")
    for step in timeline(recording):
        took = "" if step.duration_ms is None else f"{step.duration_ms:.0f} ms"
        table.add_row(
            str(step.n),
            f"{step.offset_ms / 1000:.3f}s",
            escape(f"{step.sender} → {step.recipient}"),
            escape(step.kind),
            escape(step.summary),
            escape((step.task_id or "")[:8]),
            took,
        )
    return table


class SessionSummary(BaseModel):
    """One line of ``scriptorium sessions``: what was asked, how it ended, how long it took."""

    id: str
    state: str
    created: int
    duration_s: float | None
    question: str | None
    verdict: str | None
    rounds: int | None
    failed: str | None = Field(description="The first failure the log records, if any.")
    bindings: dict[str, str]


def summarize(recording: Recording) -> SessionSummary:
    """The summary of a recorded session (its log tells the question and the outcome)."""
    session = recording.session
    events = recording.events
    asked = next((e.payload for e in events if e.kind == "answer.request" and e.payload), {})
    answered = next((e.payload for e in events if e.kind == "answer.result" and e.payload), {})
    failed = next((e for e in events if e.kind.endswith((".failed", ".unreachable"))), None)
    end = session.ended if session and session.ended else (events[-1].ts if events else None)
    start = session.created if session else (events[0].ts if events else None)
    rounds = answered.get("rounds")
    return SessionSummary(
        id=session.id if session else "",
        state=session.state if session else "unknown",
        created=start or 0,
        duration_s=None if start is None or end is None else (end - start) / 1000,
        question=asked.get("question") if isinstance(asked.get("question"), str) else None,
        verdict=answered.get("verdict") if isinstance(answered.get("verdict"), str) else None,
        rounds=rounds if isinstance(rounds, int) else None,
        failed=None if failed is None else f"{failed.kind}: {describe(failed)}",
        bindings=session.bindings if session else {},
    )


def sessions_table(summaries: Sequence[SessionSummary]) -> Table:
    """A Rich table of sessions, newest first as the registry lists them."""
    table = Table(title="Scriptorium sessions", expand=False)
    for column in ("session", "state", "started", "took", "question", "outcome", "bindings"):
        table.add_column(column, overflow="fold")
    for summary in summaries:
        took = "" if summary.duration_s is None else f"{summary.duration_s:.1f}s"
        if summary.verdict is not None:
            outcome = f"{summary.verdict} ({summary.rounds} round(s))"
        else:
            outcome = summary.failed or ("running" if summary.state == "active" else "no answer")
        bindings = ", ".join(f"{role}={instance}" for role, instance in summary.bindings.items())
        table.add_row(
            escape(summary.id),
            escape(summary.state),
            _clock(summary.created),
            took,
            escape(summary.question or ""),
            escape(outcome),
            escape(bindings),
        )
    return table


async def replay(
    recording: Recording, on_step: Callable[[Step], None], *, speed: float = 1.0
) -> None:
    """Call ``on_step`` for each step at its original offset divided by ``speed``."""
    if speed <= 0:
        raise ValueError("speed must be > 0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in timeline(recording):
        wait = started + step.offset_ms / 1000 / speed - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        on_step(step)


def to_jsonl(recording: Recording) -> str:
    """JSON Lines: a header line (format and session), then one line per event."""
    header = {"format": recording.format, "session": _dump(recording.session)}
    lines = [json.dumps(header)] + [event.model_dump_json() for event in recording.events]
    return "\n".join(lines) + "\n"


def load(path: Path) -> Recording:
    """A recording exported as JSON (``--json``) or JSON Lines (``--jsonl``)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{path} is empty")
    first_line = stripped.splitlines()[0]
    try:
        header = json.loads(first_line)
    except json.JSONDecodeError:
        header = None
    if isinstance(header, dict) and "events" not in header and "format" in header:
        events = [SessionEvent.model_validate_json(line) for line in stripped.splitlines()[1:]]
        return Recording.model_validate({**header, "events": events})
    return Recording.model_validate_json(stripped)


def _dump(session: Session | None) -> object:
    return None if session is None else session.model_dump(mode="json")


def describe(event: SessionEvent) -> str:
    if event.summary:
        return event.summary
    payload = event.payload or {}
    for key in ("question", "query", "verdict", "text"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value if len(value) <= 80 else value[:77] + "..."
    return ""


def _duration(event: SessionEvent) -> float | None:
    value = (event.payload or {}).get("ms")
    return float(value) if isinstance(value, int | float) else None


def _clock(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
