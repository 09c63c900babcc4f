"""Registry: registration, discovery, heartbeats, sweeps and the change feed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from a2a.types import AgentCard
from pytest_httpserver import HTTPServer

from protocol.cards import CARD_PATH, card_to_dict
from registry import (
    AgentState,
    InvalidCard,
    RedisKeys,
    RegistrationRefused,
    Registry,
    RegistrySettings,
    SpoofedCard,
)
from registry.records import AgentRecord, Change
from scriptorium.testing import wait_for
from tests.registry.conftest import HeardAgo, RegistryWith, blocked_stream_reads, redis_now_ms

AddAgent = Callable[..., Awaitable[AgentRecord]]
MakeCard = Callable[..., AgentCard]


async def test_register_get_and_discover_by_skill_and_tag(
    registry: Registry, add_agent: AddAgent, make_card: MakeCard
) -> None:
    searcher = await add_agent("retriever", 9001, [("search", ["retrieval", "fast"])])
    await add_agent("writer", 9002, [("write", ["text"]), ("summarise", ["fast"])])

    assert searcher.id == "retriever@127.0.0.1-9001"
    assert searcher.url == "http://127.0.0.1:9001"
    assert searcher.state is AgentState.HEALTHY
    assert searcher.capacity == 2
    assert searcher.leased == 0

    got = await registry.get(searcher.id)
    assert got is not None
    assert got.card == card_to_dict(
        make_card("retriever", "http://127.0.0.1:9001", [("search", ["retrieval", "fast"])])
    )
    assert got.skills == ["search"]
    assert got.tags == ["retrieval", "fast"]

    assert [r.name for r in await registry.discover("search")] == ["retriever"]
    assert [r.name for r in await registry.discover("write")] == ["writer"]
    assert sorted(r.name for r in await registry.discover(tag="fast")) == ["retriever", "writer"]
    assert [r.name for r in await registry.discover("summarise", tag="fast")] == ["writer"]
    assert await registry.discover("nobody-offers-this") == []
    assert await registry.get("missing@127.0.0.1-1") is None


async def test_discover_orders_by_free_capacity_and_skips_unhealthy(
    registry: Registry, redis: aioredis.Redis, keys: RedisKeys, add_agent: AddAgent
) -> None:
    small = await add_agent("small", 9001, capacity=2)
    big = await add_agent("big", 9002, capacity=5)
    stale = await add_agent("stale", 9003, capacity=50)
    await redis.hset(keys.agent(stale.id), "last_seen", 0)  # its heartbeat is long gone

    found = await registry.discover("search")
    assert [r.id for r in found] == [big.id, small.id]
    assert (await registry.get(stale.id)).state is AgentState.OFFLINE  # type: ignore[union-attr]
    assert {r.id for r in await registry.list(skill="search")} == {small.id, big.id, stale.id}


async def test_heartbeats_keep_an_instance_healthy(
    registry: Registry, settings: RegistrySettings, heard_ago: HeardAgo, add_agent: AddAgent
) -> None:
    record = await add_agent("retriever", 9001)
    for _ in range(3):  # each time its heartbeat has aged past the TTL, a heartbeat revives it
        await heard_ago(record.id, settings.heartbeat_ttl_ms + 100)
        assert await registry.heartbeat(record.id, load=3)
        assert (await registry.get(record.id)).state is AgentState.HEALTHY  # type: ignore[union-attr]
    await registry.sweep()
    current = await registry.get(record.id)
    assert current is not None
    assert current.state is AgentState.HEALTHY
    assert current.load == 3


async def test_missing_heartbeats_go_suspect_then_offline_with_change_events(
    registry_with: RegistryWith, heard_ago: HeardAgo, add_agent: AddAgent
) -> None:
    # Healthy below 10 s, suspect until 20 s, offline after. The test ages the heartbeat
    # itself (last_seen against the Redis clock), so no window races the machine's speed.
    registry = registry_with(heartbeat_interval_s=5.0, heartbeat_ttl_s=20.0)
    record = await add_agent("retriever", 9001, on=registry)
    start = (await registry.changes())[-1].id

    await heard_ago(record.id, 15_000)
    assert (await registry.get(record.id)).state is AgentState.SUSPECT  # type: ignore[union-attr]
    report = await registry.sweep()
    assert [(t.old, t.new) for t in report.transitions] == [
        (AgentState.HEALTHY, AgentState.SUSPECT)
    ]
    assert await registry.discover("search") == []

    await heard_ago(record.id, 25_000)
    report = await registry.sweep()
    assert [(t.old, t.new) for t in report.transitions] == [
        (AgentState.SUSPECT, AgentState.OFFLINE)
    ]
    assert (await registry.sweep()).transitions == []  # nothing new: no duplicate events

    assert await registry.heartbeat(record.id)  # it comes back
    assert [r.id for r in await registry.discover("search")] == [record.id]

    states = [
        (c.fields["old"], c.fields["new"])
        for c in await registry.changes(after=start)
        if c.kind == "state" and c.instance_id == record.id
    ]
    assert states == [("healthy", "suspect"), ("suspect", "offline"), ("offline", "healthy")]


async def test_concurrent_sweepers_emit_each_transition_once(
    registry: Registry, settings: RegistrySettings, heard_ago: HeardAgo, add_agent: AddAgent
) -> None:
    for agent in (await add_agent("a", 9001), await add_agent("b", 9002)):
        await heard_ago(agent.id, settings.heartbeat_ttl_ms)  # just offline
    reports = await asyncio.gather(*(registry.sweep() for _ in range(5)))
    transitions = [t for report in reports for t in report.transitions]
    assert sorted((t.instance_id, t.new) for t in transitions) == [
        ("a@127.0.0.1-9001", AgentState.OFFLINE),
        ("b@127.0.0.1-9002", AgentState.OFFLINE),
    ]


async def test_sweep_deletes_instances_offline_past_retention(
    redis: aioredis.Redis,
    keys: RedisKeys,
    registry_with: RegistryWith,
    heard_ago: HeardAgo,
    add_agent: AddAgent,
) -> None:
    registry = registry_with(offline_retention_s=0.1)
    settings = registry.settings
    record = await add_agent("retriever", 9001, on=registry)
    await heard_ago(record.id, settings.heartbeat_ttl_ms + 100)  # offline 0.1 s
    report = await registry.sweep()
    assert report.removed == [record.id]
    assert await registry.get(record.id) is None
    assert not await redis.exists(keys.skill("search"), keys.tag("retrieval"))
    assert not await redis.sismember(keys.agents, record.id)
    last = (await registry.changes())[-1]
    assert (last.kind, last.instance_id, last.fields) == (
        "deregistered",
        record.id,
        {"reason": "offline"},
    )


async def test_heartbeat_of_unknown_instance_returns_false(
    registry: Registry, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    assert await registry.heartbeat("ghost@127.0.0.1-1") is False
    assert not await redis.exists(keys.agent("ghost@127.0.0.1-1"))  # not created by accident


async def test_deregister_removes_record_and_indexes(
    registry: Registry, redis: aioredis.Redis, keys: RedisKeys, add_agent: AddAgent
) -> None:
    record = await add_agent("retriever", 9001)
    assert await registry.deregister(record.id) is True
    assert await registry.get(record.id) is None
    assert await registry.list() == []
    assert not await redis.exists(
        keys.agent(record.id), keys.skill("search"), keys.tag("retrieval")
    )
    assert await registry.deregister(record.id) is False
    assert (await registry.changes())[-1].kind == "deregistered"


async def test_reregistration_keeps_leases_and_reindexes_skills(
    registry: Registry, redis: aioredis.Redis, keys: RedisKeys, add_agent: AddAgent
) -> None:
    first = await add_agent("agent", 9001, [("search", ["retrieval"])], capacity=3)
    session = await registry.sessions.negotiate({"r": "search"})
    assert session.bindings == {"r": first.id}
    stored = await registry.get(first.id)  # the first registration took effect
    assert stored is not None
    assert (stored.skills, stored.leased, stored.registered_at) == (
        ["search"],
        1,
        first.registered_at,
    )

    async def clock_passed_first() -> bool:
        return await redis_now_ms(redis) > first.registered_at

    # From now on a new registration is stamped later: an equal registered_at means kept.
    await wait_for(clock_passed_first, 5, "the Redis clock did not pass the first registration")

    again = await add_agent("agent", 9001, [("write", ["text"])], capacity=3)
    assert again.id == first.id
    assert again.leased == 1  # the live session's lease survives re-registration
    assert again.registered_at == first.registered_at
    assert await registry.discover("search") == []  # the old skill is no longer indexed
    assert not await redis.exists(keys.skill("search"))
    assert [r.id for r in await registry.discover("write")] == [first.id]


async def test_invalid_card_is_rejected_with_reason_and_nothing_stored(
    registry: Registry, redis: aioredis.Redis, redis_prefix: str, make_card: MakeCard
) -> None:
    card = card_to_dict(make_card("retriever", "http://127.0.0.1:9001"))
    card["skills"] = []
    with pytest.raises(InvalidCard, match=r"card\.skills is empty"):
        await registry.register(card, verify=False)
    with pytest.raises(InvalidCard, match=r"not an A2A v1\.0 agent card"):
        await registry.register({"name": "x", "bogus": 1}, verify=False)
    assert [key async for key in redis.scan_iter(match=f"{redis_prefix}:*")] == []


async def test_register_verifies_the_served_card(
    registry: Registry, httpserver: HTTPServer, make_card: MakeCard
) -> None:
    base = httpserver.url_for("/").rstrip("/")
    card = make_card("retriever", base)
    httpserver.expect_request(CARD_PATH).respond_with_json(card_to_dict(card))
    record = await registry.register(card)
    assert record.url == base
    assert record.id == f"retriever@localhost-{httpserver.port}"
    assert len(httpserver.log) == 1


async def test_spoofed_card_is_rejected(
    registry: Registry,
    httpserver: HTTPServer,
    redis: aioredis.Redis,
    keys: RedisKeys,
    make_card: MakeCard,
) -> None:
    base = httpserver.url_for("/").rstrip("/")
    served = make_card("retriever", base, capacity=2)
    httpserver.expect_request(CARD_PATH).respond_with_json(card_to_dict(served))
    claimed = make_card(
        "retriever", base, [("search", ["retrieval"]), ("write", ["text"])], capacity=99
    )
    with pytest.raises(SpoofedCard, match="differs from the submitted one") as info:
        await registry.register(claimed)
    assert "skills" in str(info.value)
    assert "capabilities" in str(info.value)
    assert not await redis.exists(keys.agents)


async def test_unreachable_agent_is_refused(
    registry: Registry, httpserver: HTTPServer, make_card: MakeCard
) -> None:
    base = httpserver.url_for("/").rstrip("/")
    httpserver.expect_request(CARD_PATH).respond_with_data("gone", status=404)
    with pytest.raises(RegistrationRefused, match=r"could not fetch a valid agent card"):
        await registry.register(make_card("retriever", base))


async def test_card_url_outside_allowed_networks_is_refused(
    registry: Registry, make_card: MakeCard
) -> None:
    card = make_card("retriever", "http://10.20.30.40:8000")
    refusal = "does not resolve to addresses inside the allowed networks"
    with pytest.raises(RegistrationRefused, match=refusal) as outside:
        await registry.register(card, verify=False)
    with pytest.raises(RegistrationRefused, match=refusal) as unknown:
        await registry.register(make_card("x", "http://no-such-host.invalid:80"), verify=False)
    # One answer for both: the registry is no oracle of what names resolve to.
    assert str(outside.value).replace("10.20.30.40", "H") == str(unknown.value).replace(
        "no-such-host.invalid", "H"
    )
    assert await registry.list() == []


async def test_watch_follows_the_change_feed_and_resumes(
    registry: Registry, redis: aioredis.Redis, add_agent: AddAgent
) -> None:
    received: list[Change] = []

    async def follow() -> None:
        async for change in registry.watch(block_ms=200):
            received.append(change)
            if len(received) == 2:
                return

    async def watcher_blocks() -> bool:
        return await blocked_stream_reads(redis) > blocked

    blocked = await blocked_stream_reads(redis)
    watcher = asyncio.create_task(follow())
    # It starts at "$" (only what comes next): wait until it has taken "$" and blocks reading.
    await wait_for(watcher_blocks, 5, "the watcher did not block reading the feed")
    a = await add_agent("a", 9001)
    await registry.deregister(a.id)
    await asyncio.wait_for(watcher, 5)
    assert [(c.kind, c.instance_id) for c in received] == [
        ("registered", a.id),
        ("deregistered", a.id),
    ]

    resumed = registry.watch(received[0].id, block_ms=200)
    change = await asyncio.wait_for(anext(resumed), 5)
    assert change.id == received[1].id
    await resumed.aclose()


async def test_works_with_decoded_responses_and_hiredis_packing(
    redis_url: str, settings: RegistrySettings, keys: RedisKeys, add_agent: AddAgent
) -> None:
    from registry.redis_client import HiredisPackConnection, connect

    for client in (
        aioredis.from_url(redis_url, decode_responses=True),
        connect(redis_url),
    ):
        try:
            registry = Registry(client, settings, keys=keys)
            record = await add_agent("agent", 9001, on=registry)
            assert [r.id for r in await registry.discover("search")] == [record.id]
            session = await registry.sessions.negotiate({"r": "search"})
            assert (await registry.sessions.get(session.id)).bindings == {"r": record.id}
            await registry.sessions.release(session.id)
            assert (await registry.get(record.id)).leased == 0  # type: ignore[union-attr]
            assert await registry.deregister(record.id)
        finally:
            await client.aclose()
    assert connect(redis_url).connection_pool.connection_class is HiredisPackConnection


async def test_scripts_reload_after_script_flush(
    registry: Registry, redis: aioredis.Redis, add_agent: AddAgent
) -> None:
    record = await add_agent("agent", 9001)
    await redis.script_flush()
    # Concurrent calls travel in one pipeline; every NOSCRIPT reply is retried after loading.
    assert all(await asyncio.gather(*(registry.heartbeat(record.id) for _ in range(10))))
    await redis.script_flush()
    assert await registry.heartbeat(record.id)
