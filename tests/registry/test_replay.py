"""``scriptorium sessions`` and ``scriptorium replay``: a recorded session, read back from the
registry alone (no agent up), shown, exported and imported unchanged, replayed in time."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from protocol.http import running
from registry import Registry, RegistrySettings, Session, SessionLog
from registry.api import create_app
from scriptorium.replay import Recording, Step, load, replay
from scriptorium.testing import run_cli
from tests.registry.conftest import AddAgent


@pytest.fixture
async def registry_url(redis: aioredis.Redis, settings: RegistrySettings) -> AsyncIterator[str]:
    async with running(create_app(settings, redis=redis)) as url:
        yield url


@pytest.fixture
async def recorded(registry: Registry, session_log: SessionLog, add_agent: AddAgent) -> Session:
    """A finished session: opened, a search asked and answered, a failure, released."""
    await add_agent("retriever", 9101, capacity=2)
    session = await registry.sessions.negotiate({"retriever": "search"})
    for kind, payload, summary in (
        ("answer.request", {"question": "Who launched Sputnik 1?"}, None),
        ("search.request", {"query": "who launched Sputnik 1?"}, None),
        ("search.result", {"passages": 3, "ms": 12.5}, None),
        ("write.failed", {"ms": 40}, "the writer failed: <b>[boom]</b>"),
        ("answer.result", {"verdict": "accept", "rounds": 2, "text": "The USSR [1]."}, None),
    ):
        await asyncio.sleep(0.05)  # spread the steps in time: their timing is what replay keeps
        await session_log.append(
            session.id,
            sender="orchestrator",
            recipient="retriever",
            kind=kind,
            task_id="task-123456789",
            payload=payload,
            summary=summary,
        )
    await registry.sessions.release(session.id)
    return session


async def test_a_session_is_listed_shown_exported_and_imported_unchanged(
    registry_url: str, recorded: Session, tmp_path: Path
) -> None:
    code, out, err = await run_cli("sessions", "--json", "--registry-url", registry_url)
    assert code == 0, err
    listed = {s["id"]: s for s in json.loads(out)}
    mine = listed[recorded.id]
    assert mine["state"] == "released"
    assert mine["question"] == "Who launched Sputnik 1?"
    assert (mine["verdict"], mine["rounds"]) == ("accept", 2)
    assert mine["failed"].startswith("write.failed")
    assert mine["bindings"] == recorded.bindings
    assert mine["duration_s"] >= 0.2

    code, out, err = await run_cli("sessions", "--since", "1h", "--registry-url", registry_url)
    assert code == 0, err
    assert "Who launched Sputnik 1?" in out
    code, _, err = await run_cli("sessions", "--since", "soon", "--registry-url", registry_url)
    assert code == 2
    assert "30m, 2h or 1d" in err

    code, out, err = await run_cli("replay", recorded.id, "--json", "--registry-url", registry_url)
    assert code == 0, err
    exported = Recording.model_validate_json(out)
    assert exported.session is not None
    assert exported.session.id == recorded.id
    kinds = [e.kind for e in exported.events]
    assert kinds[0] == "session.opened"
    assert kinds[1:] == [
        "answer.request",
        "search.request",
        "search.result",
        "write.failed",
        "answer.result",
        "session.released",
    ]
    assert [e.seq for e in exported.events] == sorted(e.seq for e in exported.events)

    code, out, err = await run_cli("replay", recorded.id, "--jsonl", "--registry-url", registry_url)
    assert code == 0, err
    exported_file = tmp_path / "session.jsonl"
    exported_file.write_text(out, encoding="utf-8")
    assert load(exported_file) == exported, "JSON Lines round-trips to the same recording"

    code, out, err = await run_cli("replay", "--import", str(exported_file), "--json")
    assert code == 0, err
    assert Recording.model_validate_json(out) == exported

    code, out, err = await run_cli("replay", "--import", str(exported_file))
    assert code == 0, err
    assert "search.result" in out
    assert "12 ms" in out, "a result shows how long it took"
    assert "[boom]" in out, "text from the log is shown as written, not as markup"


async def test_an_unknown_session_says_so_and_how_long_logs_are_kept(registry_url: str) -> None:
    code, _, err = await run_cli("replay", "s-nosuchsession", "--registry-url", registry_url)
    assert code == 2
    assert "no session 's-nosuchsession'" in err
    assert "logs are kept" in err


async def test_replay_keeps_the_order_and_the_relative_timing(
    registry_url: str, recorded: Session, settings: RegistrySettings, redis: aioredis.Redis
) -> None:
    events = await SessionLog(redis, settings).read(recorded.id)
    recording = Recording(session=recorded, events=events)
    seen: list[tuple[float, Step]] = []
    started = time.monotonic()
    await replay(recording, lambda step: seen.append((time.monotonic() - started, step)), speed=2)
    assert [step.n for _, step in seen] == [e.seq for e in events]
    for at, step in seen:
        assert at >= step.offset_ms / 1000 / 2 - 0.01, "no step is shown before its time"
    last_offset = seen[-1][1].offset_ms / 1000
    assert last_offset >= 0.1, "the recorded steps were spread out"
    assert seen[-1][0] < last_offset / 2 + 1.0, "the timing is scaled by the speed"


async def test_follow_tails_a_live_session_until_it_closes(
    registry_url: str, registry: Registry, session_log: SessionLog, add_agent: AddAgent
) -> None:
    await add_agent("retriever", 9102, capacity=2)
    session = await registry.sessions.negotiate({"retriever": "search"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptorium",
        "replay",
        session.id,
        "--follow",
        "--registry-url",
        registry_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "240"},
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"session.opened" in first, "the follower is reading before anything else happens"
    for kind in ("search.request", "search.result"):
        await session_log.append(
            session.id, sender="orchestrator", recipient="retriever", kind=kind
        )
    await registry.sessions.release(session.id)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    lines = [first.decode(), *out.decode().splitlines()]
    kinds = [
        k
        for line in lines
        for k in ("session.opened", "search.request", "search.result", "session.released")
        if f" {k} " in f"{line} "
    ]
    assert kinds == ["session.opened", "search.request", "search.result", "session.released"]
