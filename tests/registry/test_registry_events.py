"""Session event log: ordered, resumable, bounded payloads, follow until the session ends."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from registry import (
    InvalidRequest,
    RegistrySettings,
    Session,
    SessionBroker,
    SessionEvent,
    SessionLog,
    SessionNotFound,
)
from registry.records import AgentRecord
from scriptorium.testing import wait_for
from tests.registry.conftest import blocked_stream_reads

AddAgent = Callable[..., Awaitable[AgentRecord]]


@pytest.fixture
async def session(broker: SessionBroker, add_agent: AddAgent) -> Session:
    await add_agent("agent", 9001, capacity=4)
    return await broker.negotiate({"retriever": "search"})


async def test_append_and_read_in_order_with_resume(
    session_log: SessionLog, session: Session
) -> None:
    appended = [
        await session_log.append(
            session.id,
            sender="orchestrator",
            recipient="retriever",
            kind="task.sent",
            task_id=f"t{i}",
            payload={"query": f"q{i}"},
        )
        for i in range(3)
    ]
    events = await session_log.read(session.id)
    assert [e.kind for e in events] == ["session.opened", "task.sent", "task.sent", "task.sent"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[1:] == appended
    assert events[0].payload == {"roles": session.roles, "bindings": session.bindings}
    assert appended[0].sender == "orchestrator"
    assert appended[0].recipient == "retriever"
    assert appended[0].task_id == "t0"
    assert appended[0].payload == {"query": "q0"}

    after_first = await session_log.read(session.id, after=appended[0].id)
    assert [e.task_id for e in after_first] == ["t1", "t2"]
    assert await session_log.read(session.id, after=appended[-1].id) == []
    assert len(await session_log.read(session.id, count=2)) == 2


async def test_seq_stays_gapless_under_concurrent_appends(
    session_log: SessionLog, session: Session
) -> None:
    await asyncio.gather(
        *(
            session_log.append(session.id, sender=f"a{i}", recipient="b", kind="note")
            for i in range(50)
        )
    )
    events = await session_log.read(session.id)
    assert [e.seq for e in events] == list(range(1, 52))
    stream_order = [tuple(map(int, e.id.split("-"))) for e in events]
    assert stream_order == sorted(stream_order)


async def test_oversize_payload_is_stored_truncated(
    session_log: SessionLog, session: Session, settings: RegistrySettings
) -> None:
    big = {"text": "x" * (settings.max_event_payload_bytes + 10)}
    event = await session_log.append(
        session.id, sender="writer", recipient="orchestrator", kind="draft", payload=big
    )
    assert event.truncated is True
    body = json.dumps(big, separators=(",", ":")).encode()
    assert event.payload == {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    assert event.summary is not None
    assert event.summary.startswith('{"text":"xxx')
    assert len(event.summary.encode()) <= 1024
    assert (await session_log.read(session.id))[-1] == event

    summarised = await session_log.append(
        session.id, sender="w", recipient="o", kind="draft", payload=big, summary="a long draft"
    )
    assert summarised.summary == "a long draft"
    assert summarised.truncated is True

    passages = [{"chunk_id": f"c{i}", "text": "a passage"} for i in range(3)]
    searched = await session_log.append(
        session.id,
        sender="r",
        recipient="o",
        kind="search.result",
        payload={**big, "passages": passages},
    )
    assert searched.truncated is True
    assert searched.payload is not None
    assert searched.payload["passages"] == passages, "the passages are kept for a replay"
    assert (await session_log.read(session.id))[-1] == searched


async def test_append_to_unknown_session_fails(session_log: SessionLog) -> None:
    with pytest.raises(SessionNotFound):
        await session_log.append("nope", sender="a", recipient="b", kind="k")
    with pytest.raises(SessionNotFound):
        await session_log.read("nope")
    with pytest.raises(InvalidRequest, match="not a stream id"):
        await session_log.read("nope", after="bogus")


async def test_follow_delivers_live_events_and_ends_when_released(
    session_log: SessionLog, broker: SessionBroker, session: Session, redis: aioredis.Redis
) -> None:
    first = await session_log.append(session.id, sender="o", recipient="r", kind="before")
    received: list[SessionEvent] = []

    async def follow() -> None:
        async for event in session_log.follow(session.id, after=first.id, block_ms=200):
            received.append(event)

    async def follower_blocks() -> bool:
        return await blocked_stream_reads(redis) > blocked

    blocked = await blocked_stream_reads(redis)
    follower = asyncio.create_task(follow())
    # What follows is delivered live: the follower has caught up and blocks reading.
    await wait_for(follower_blocks, 5, "the follower did not block reading the log")
    await session_log.append(session.id, sender="r", recipient="o", kind="live")
    await broker.release(session.id)
    await asyncio.wait_for(follower, 5)  # ends by itself once the session is closed

    assert [e.kind for e in received] == ["live", "session.released"]
    assert [e.seq for e in received] == [3, 4]


async def test_follow_of_a_closed_session_replays_and_stops(
    session_log: SessionLog, broker: SessionBroker, session: Session
) -> None:
    await session_log.append(session.id, sender="o", recipient="r", kind="work")
    await broker.release(session.id)
    events = [e async for e in session_log.follow(session.id, block_ms=5000)]
    assert [e.kind for e in events] == ["session.opened", "work", "session.released"]
    with pytest.raises(SessionNotFound):
        async for _ in session_log.follow("never-existed"):
            pass
