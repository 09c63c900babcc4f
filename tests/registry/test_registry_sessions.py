"""Session broker: all-or-nothing leasing, rebinding, release, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider

from registry import (
    InvalidRequest,
    NoCapacity,
    RedisKeys,
    Registry,
    RegistrySettings,
    Session,
    SessionBroker,
    SessionClosed,
    SessionNotFound,
    SessionState,
)
from registry.records import AgentRecord
from tests.registry.conftest import redis_now_ms

AddAgent = Callable[..., Awaitable[AgentRecord]]


@pytest.fixture
def settings(settings: RegistrySettings) -> RegistrySettings:
    """Agents that stay healthy for the whole test, however slow the machine: these tests
    age an agent themselves (``last_seen``) when they need one unhealthy, never by waiting."""
    return settings.model_copy(update={"heartbeat_interval_s": 30.0, "heartbeat_ttl_s": 90.0})


async def leased(registry: Registry) -> dict[str, int]:
    return {r.id: r.leased for r in await registry.list()}


async def test_negotiate_binds_each_role_to_the_freest_healthy_instance(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    small = await add_agent("retriever-a", 9001, capacity=1)
    big = await add_agent("retriever-b", 9002, capacity=3)
    writer = await add_agent("writer", 9003, [("write", ["text"])], capacity=2)

    session = await broker.negotiate({"retriever": "search", "writer": "write"}, lease_s=30)

    assert session.bindings == {"retriever": big.id, "writer": writer.id}
    assert session.state is SessionState.ACTIVE
    assert session.expires - session.created == 30_000
    assert len(session.trace_id) == 32
    assert await leased(registry) == {small.id: 0, big.id: 1, writer.id: 1}
    assert await broker.get(session.id) == session
    assert await redis.zscore(keys.sessions, session.id) == session.expires
    opened = (await registry.changes())[-1]
    assert (opened.kind, opened.session_id) == ("session.opened", session.id)


async def test_roles_of_one_call_count_each_others_tentative_leases(
    registry: Registry, broker: SessionBroker, add_agent: AddAgent
) -> None:
    a = await add_agent("a", 9001, capacity=2)
    b = await add_agent("b", 9002, capacity=1)
    session = await broker.negotiate({"one": "search", "two": "search", "three": "search"})
    assert sorted(session.bindings.values()) == sorted([a.id, a.id, b.id])
    assert await leased(registry) == {a.id: 2, b.id: 1}
    with pytest.raises(NoCapacity):
        await broker.negotiate({"four": "search"})


async def test_ties_go_to_the_lowest_id(broker: SessionBroker, add_agent: AddAgent) -> None:
    await add_agent("b", 9002, capacity=2)
    a = await add_agent("a", 9001, capacity=2)
    session = await broker.negotiate({"r": "search"})
    assert session.bindings == {"r": a.id}


async def test_concurrent_negotiations_never_over_lease(
    registry: Registry, broker: SessionBroker, add_agent: AddAgent
) -> None:
    capacities = {"a": 5, "b": 7, "c": 10}
    for port, (name, capacity) in enumerate(capacities.items(), 9001):
        await add_agent(name, port, capacity=capacity)

    results = await asyncio.gather(
        *(broker.negotiate({"retriever": "search"}) for _ in range(100)),
        return_exceptions=True,
    )

    sessions = [r for r in results if isinstance(r, Session)]
    refused = [r for r in results if isinstance(r, NoCapacity)]
    assert len(sessions) == sum(capacities.values()) == 22
    assert len(refused) == 100 - 22
    assert len({s.id for s in sessions}) == 22
    records = await registry.list()
    assert sum(r.leased for r in records) == len(sessions)
    assert all(r.leased == r.capacity for r in records)
    assert "skill 'search'" in str(refused[0])
    assert "role 'retriever'" in str(refused[0])


async def test_failing_second_role_takes_nothing(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    retriever = await add_agent("retriever", 9001, capacity=1)
    writer = await add_agent("writer", 9002, [("write", ["text"])], capacity=1)
    await broker.negotiate({"w": "write"})  # the only writer is now full

    with pytest.raises(NoCapacity, match="'write'") as info:
        await broker.negotiate({"retriever": "search", "writer": "write"}, session_id="s-fail")

    assert (info.value.role, info.value.skill) == ("writer", "write")
    assert await leased(registry) == {retriever.id: 0, writer.id: 1}
    assert not await redis.exists(keys.session("s-fail"), keys.session_events("s-fail"))
    assert await redis.zscore(keys.sessions, "s-fail") is None


async def test_unhealthy_instances_are_not_leased(
    broker: SessionBroker, add_agent: AddAgent, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    stale = await add_agent("stale", 9001, capacity=9)
    await redis.hset(keys.agent(stale.id), "last_seen", 0)
    with pytest.raises(NoCapacity):
        await broker.negotiate({"r": "search"})
    with pytest.raises(NoCapacity):
        await broker.negotiate({"r": "nobody-offers-this"})


async def test_rebind_moves_a_role_off_a_dead_instance_and_returns_its_lease(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    first = await add_agent("first", 9001, capacity=3)
    session = await broker.negotiate({"retriever": "search"})
    assert session.bindings == {"retriever": first.id}
    await redis.hset(keys.agent(first.id), "last_seen", 0)  # first dies (offline)
    second = await add_agent("second", 9002, capacity=1)

    moved = await broker.rebind(session.id, "retriever")

    assert moved.bindings == {"retriever": second.id}
    assert await leased(registry) == {first.id: 0, second.id: 1}
    assert (await broker.get(session.id)).bindings == {"retriever": second.id}
    change = (await registry.changes())[-1]
    assert change.kind == "session.rebound"
    assert change.fields == {"role": "retriever", "old": first.id, "new": second.id}


async def test_rebind_without_alternative_leaves_the_session_unchanged(
    registry: Registry, broker: SessionBroker, add_agent: AddAgent
) -> None:
    only = await add_agent("only", 9001, capacity=5)
    session = await broker.negotiate({"retriever": "search"})
    with pytest.raises(NoCapacity):
        await broker.rebind(session.id, "retriever")  # the current one is excluded
    assert await broker.get(session.id) == session
    assert await leased(registry) == {only.id: 1}
    with pytest.raises(InvalidRequest, match="no role 'critic'"):
        await broker.rebind(session.id, "critic")
    with pytest.raises(SessionNotFound):
        await broker.rebind("no-such-session", "retriever")


async def test_release_twice_gives_back_once(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    agent = await add_agent("agent", 9001, capacity=3)
    kept = await broker.negotiate({"r": "search"})
    done = await broker.negotiate({"r": "search", "r2": "search"})
    assert await leased(registry) == {agent.id: 3}

    await broker.release(done.id)
    await broker.release(done.id)
    await asyncio.gather(*(broker.release(done.id) for _ in range(5)))

    assert await leased(registry) == {agent.id: 1}  # only `kept` still holds a lease
    released = await broker.get(done.id)
    assert released.state is SessionState.RELEASED
    assert released.ended is not None
    assert await redis.zscore(keys.sessions, done.id) is None
    retention_ms = int(broker.settings.session_retention_s * 1000)
    assert 0 < await redis.pttl(keys.session(done.id)) <= retention_ms
    assert 0 < await redis.pttl(keys.session_events(done.id)) <= retention_ms
    assert [s.id for s in await broker.list(state=SessionState.ACTIVE)] == [kept.id]
    assert [s.id for s in await broker.list(state=SessionState.RELEASED)] == [done.id]
    with pytest.raises(SessionClosed):
        await broker.rebind(done.id, "r")
    with pytest.raises(SessionClosed):
        await broker.renew(done.id)
    with pytest.raises(SessionNotFound):
        await broker.release("never-existed")


async def test_release_after_the_agent_is_gone_does_not_recreate_it(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    agent = await add_agent("agent", 9001)
    session = await broker.negotiate({"r": "search"})
    await registry.deregister(agent.id)
    await broker.release(session.id)
    assert not await redis.exists(keys.agent(agent.id))


async def test_sweep_expires_abandoned_sessions_and_returns_their_leases(
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    agent = await add_agent("agent", 9001, capacity=4)
    abandoned = await broker.negotiate({"r": "search"}, lease_s=60)
    renewed = await broker.negotiate({"r": "search"}, lease_s=60)
    lasting = await broker.negotiate({"r": "search"}, lease_s=60)
    now = await redis_now_ms(redis)
    for lapsed in (abandoned, renewed):  # their leases ran out (on the Redis clock)
        await redis.zadd(keys.sessions, {lapsed.id: now - 1})
        await redis.hset(keys.session(lapsed.id), "expires", now - 1)
    assert (await broker.renew(renewed.id, lease_s=60)).expires > now

    report = await registry.sweep()

    assert report.expired_sessions == [abandoned.id]
    assert (await broker.get(abandoned.id)).state is SessionState.EXPIRED
    assert await leased(registry) == {agent.id: 2}
    assert {s.id for s in await broker.list(state=SessionState.ACTIVE)} == {renewed.id, lasting.id}
    assert await redis.zscore(keys.closed_sessions, abandoned.id) is not None
    assert (await registry.sweep()).expired_sessions == []


async def test_concurrent_expiry_releases_each_session_once(
    registry: Registry, broker: SessionBroker, add_agent: AddAgent
) -> None:
    agent = await add_agent("agent", 9001, capacity=30)
    sessions = [await broker.negotiate({"r": "search"}, lease_s=60) for _ in range(30)]
    far_future = sessions[-1].expires + 1
    batches = await asyncio.gather(*(broker.expire_due(now=far_future) for _ in range(4)))
    expired = [sid for batch in batches for sid in batch]
    assert sorted(expired) == sorted(s.id for s in sessions)
    assert await leased(registry) == {agent.id: 0}


async def test_trace_id_comes_from_the_active_span(
    broker: SessionBroker, add_agent: AddAgent
) -> None:
    await add_agent("agent", 9001, capacity=3)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("negotiate") as span:
        session = await broker.negotiate({"r": "search"})
    assert session.trace_id == format(span.get_span_context().trace_id, "032x")

    given = await broker.negotiate({"r": "search"}, trace_id="ab" * 16)
    assert given.trace_id == "ab" * 16
    with pytest.raises(InvalidRequest, match="W3C trace id"):
        await broker.negotiate({"r": "search"}, trace_id="not-a-trace")


async def test_negotiate_rejects_bad_requests(broker: SessionBroker, add_agent: AddAgent) -> None:
    await add_agent("agent", 9001, capacity=3)
    with pytest.raises(InvalidRequest, match=r"roles must map 1\.\.16 roles"):
        await broker.negotiate({})
    with pytest.raises(InvalidRequest, match="not usable"):
        await broker.negotiate({"r": "search"}, session_id="x:events")
    await broker.negotiate({"r": "search"}, session_id="mine")
    with pytest.raises(InvalidRequest, match="taken"):
        await broker.negotiate({"r": "search"}, session_id="mine")
    with pytest.raises(SessionNotFound):
        await broker.get("x:events")
