"""``scriptorium sessions`` and ``replay``: session logs read from a running stack's registry
(or an exported file), shown, followed live, or answered again and compared."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from scriptorium.remote import on_stack, registry_of
from scriptorium.replay import Recording, SessionSummary, Step, read_recording, summarize
from scriptorium.terminal import console, fail, out

if TYPE_CHECKING:
    from agents.scaffold.peers import Peers
    from registry.events import SessionEvent
    from scriptorium.rerun import RunDiff


def parse_span(span: str) -> float:
    """``30s``, ``30m``, ``2h`` or ``1d`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = span[:-1], span[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"--since takes a span like 30m, 2h or 1d, not {span!r}")
    return float(number) * units[unit]


async def recent(
    peers: Peers, *, state: str | None, since_s: float | None, limit: int
) -> list[SessionSummary]:
    """Summaries of the newest sessions (in ``state``, started at most ``since_s`` ago)."""
    registry = registry_of(peers)
    found = await registry.sessions(state=state)
    if since_s is not None:
        oldest_ms = (time.time() - since_s) * 1000
        found = [s for s in found if s.created >= oldest_ms]
    summaries = []
    for session in found[:limit]:
        events = await registry.session_events(session.id) or []
        summaries.append(summarize(Recording(session=session, events=events)))
    return summaries


async def follow(peers: Peers, session_id: str) -> int:
    """Print a session's steps as they are recorded, until it closes; how many there were."""
    from scriptorium.replay import timeline

    seen: list[SessionEvent] = []
    async for event in registry_of(peers).follow_session(session_id):
        seen.append(event)
        (step,) = timeline(Recording(events=[seen[0], event]))[-1:]
        out.print(
            f"{step.offset_ms / 1000:8.3f}s  #{step.n}  {escape(step.sender)} → "
            f"{escape(step.recipient)}  {escape(step.kind)}  {escape(step.summary)}"
        )
    return len(seen)


def open_recording(
    session_id: str | None, import_file: Path | None, registry_url: str | None
) -> Recording:
    """The recording exported to ``import_file``, else session ``session_id``'s from the
    registry; exits 2 when there is none."""
    from scriptorium.replay import load

    if import_file is not None:
        try:
            return load(import_file)
        except (OSError, ValueError) as exc:
            fail(f"cannot import {import_file}: {exc}", 2)
    assert session_id is not None
    found = on_stack(registry_url, lambda peers: read_recording(registry_of(peers), session_id))
    if found is None:
        from registry.settings import RegistrySettings

        retention = RegistrySettings().session_retention_s
        fail(
            f"no session {session_id!r} in the registry: unknown, or its log expired "
            f"(logs are kept {retention / 3600:.0f} h after a session ends; "
            "`scriptorium sessions` lists what is kept)",
            2,
        )
    return found


def show(recording: Recording, *, as_json: bool, as_jsonl: bool, speed: float | None) -> None:
    """Print ``recording`` as JSON, JSON Lines, steps at their original pace (sped up
    ``speed`` times), or a timeline table."""
    from scriptorium.replay import replay, timeline_table, to_jsonl

    if as_json:
        print(recording.model_dump_json(indent=1))
    elif as_jsonl:
        print(to_jsonl(recording), end="")
    elif speed is not None:

        def step_line(step: Step) -> None:
            out.print(
                f"{step.offset_ms / 1000:8.3f}s  {escape(step.sender)} → "
                f"{escape(step.recipient)}  {escape(step.kind)}  {escape(step.summary)}"
            )

        asyncio.run(replay(recording, step_line, speed=speed))
    else:
        out.print(timeline_table(recording))


def rerun_diff(
    recording: Recording, from_step: int | None, registry_url: str | None, *, quiet: bool
) -> RunDiff:
    """Answer the recording's question again on the live stack (from step ``from_step``,
    reusing what was recorded before it); what changed. Progress unless ``quiet``."""
    from scriptorium.ask import ANSWER_TIMEOUT_S
    from scriptorium.rerun import rerun, rerun_request

    try:
        rerun_request(recording, from_step)
    except ValueError as exc:
        fail(str(exc), 2)

    def progress(text: str, data: dict[str, object]) -> None:
        if not quiet:
            console.print(f"[dim]{escape(text)}[/dim]")

    async def work(peers: Peers) -> RunDiff:
        _, diff = await rerun(recording, peers, from_step=from_step, on_progress=progress)
        return diff

    return on_stack(registry_url, work, request_timeout_s=ANSWER_TIMEOUT_S)
