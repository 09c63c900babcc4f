"""Hardening of the registry (issue #11): streams, bounds, id ownership, the API contract.

Each test was run against the code before its fix and failed there (see the issue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jsonschema
import pytest
import redis.asyncio as aioredis
from a2a.types import AgentCard
from fastapi import FastAPI
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from redis.exceptions import ResponseError

from protocol.cards import CARD_PATH, card_to_dict
from protocol.http import running
from protocol.settings import AGENT_NAMES
from registry import (
    AgentState,
    InvalidCard,
    InvalidRequest,
    RedisKeys,
    Registry,
    RegistryError,
    RegistrySettings,
    SessionBroker,
    SessionLog,
    lua,
)
from registry.api import create_app
from scriptorium.testing import wait_for

MakeCard = Callable[..., AgentCard]
AddAgent = Callable[..., Awaitable[Any]]

BAD_IDS = ["../../etc/passwd", "*", "x:agents", "<script>", "", "Upper", "a b", "a" * 129]
BAD_NAMES = ["../r", "*", "x:agents", "<script>", "", "Writer", "a@b", "r" * 65]


@contextlib.asynccontextmanager
async def api(app: FastAPI, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client; app errors come back as responses (a 500 is a 500)."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        yield http


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_error_body(response: httpx.Response) -> dict[str, Any]:
    """The documented error shape: a JSON object whose ``detail`` is a string."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str), body
    assert set(body) <= {"detail", "errors"}, body
    return body


async def sse_until(
    response: httpx.Response, wanted: Callable[[dict[str, str]], bool]
) -> dict[str, str]:
    """Read SSE events from ``response`` until one satisfies ``wanted``."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields and wanted(fields):
                return fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    raise AssertionError(f"{response.url} ended before the event awaited")


# -- 1. streams: no connection each, caps, auth ----------------------------------------------

STREAMS = 120


async def test_fault_a_hundred_open_streams_leave_the_registry_serving(
    own_valkey: Any, settings: RegistrySettings, make_card: MakeCard, httpserver: HTTPServer
) -> None:
    """120 idle SSE readers (half the change feed, half a session log) on a registry whose
    Redis pool holds 100 connections: every stream delivers, and /healthz, reads,
    registration, negotiation and the sweeper go on as if they were not there."""
    settings = settings.model_copy(
        update={"redis_url": own_valkey.url, "max_streams": 500, "max_streams_per_client": 500}
    )
    direct = aioredis.from_url(own_valkey.url)
    registry = Registry(direct, settings)
    log = SessionLog(direct, settings)
    base = httpserver.url_for("/").rstrip("/")
    served = card_to_dict(make_card("writer", base, [("write", ["text"])]))
    httpserver.expect_request(CARD_PATH).respond_with_json(served)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    try:
        card = make_card("retriever", "http://127.0.0.1:9001", capacity=50)
        await registry.register(card, verify=False)
        session = await registry.sessions.negotiate({"retriever": "search"}, lease_s=60)
        app = create_app(settings)  # its own client and pool, as `scriptorium up` runs it
        async with (
            running(app) as url,
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=20, limits=limits) as http,
            contextlib.AsyncExitStack() as streams,
        ):

            async def open_stream(path: str) -> httpx.Response:
                response = await streams.enter_async_context(http.stream("GET", path))
                assert response.status_code == 200, path
                return response

            paths = ["/changes" if i % 2 else f"/sessions/{session.id}/events" for i in range(120)]
            opened = await asyncio.gather(*(open_stream(p) for p in paths))

            # Every stream is live: one change and one session event reach all of them.
            marker = await registry.register(
                make_card("marker", "http://127.0.0.1:9002"), verify=False
            )
            await log.append(session.id, sender="test", recipient="*", kind="marker")

            def wanted(path: str) -> Callable[[dict[str, str]], bool]:
                if path == "/changes":
                    return lambda e: marker.id in e.get("data", "")
                return lambda e: e.get("event") == "marker"

            readers = [sse_until(r, wanted(p)) for r, p in zip(opened, paths, strict=True)]
            await asyncio.wait_for(asyncio.gather(*readers), 30)

            for _ in range(3):
                health = await http.get("/healthz")
                assert health.status_code == 200, health.text
            assert (await http.get("/agents")).status_code == 200
            registered = await http.post("/agents", json=served)
            assert registered.status_code == 201, registered.text
            negotiated = await http.post("/sessions", json={"roles": {"writer": "write"}})
            assert negotiated.status_code == 201, negotiated.text

            # The sweeper still runs: an instance that never beats goes offline.
            doomed = await registry.register(
                make_card("doomed", "http://127.0.0.1:9003"), verify=False
            )

            async def doomed_offline() -> bool:
                return any(
                    c.kind == "state"
                    and c.instance_id == doomed.id
                    and c.fields.get("new") == "offline"
                    for c in await registry.changes()
                )

            await wait_for(doomed_offline, 10, "the sweeper did not mark an instance offline")

            # Redis agrees: one connection (the hub's) waits in a blocking read, not one each.
            blocked = [c for c in await direct.client_list() if "b" in c["flags"]]
            assert len(blocked) <= 1, f"{len(blocked)} connections blocked for {STREAMS} streams"
        services = app.state.services
        await wait_for(lambda: services.slots.open == 0, 10, "stream slots were not given back")
    finally:
        await direct.aclose()


async def test_limit_streams_are_capped_per_client_and_in_all(
    settings: RegistrySettings, redis: aioredis.Redis
) -> None:
    app = create_app(
        settings.model_copy(
            update={"max_streams": 3, "max_streams_per_client": 2, "stream_retry_after_s": 7}
        ),
        redis=redis,
    )
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        running(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as a,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=10, transport=other) as b,
        contextlib.AsyncExitStack() as held,
    ):
        first = await held.enter_async_context(a.stream("GET", "/changes"))
        second = await held.enter_async_context(a.stream("GET", "/changes"))
        assert (first.status_code, second.status_code) == (200, 200)

        third = await a.get("/changes")
        assert third.status_code == 429
        assert third.headers["retry-after"] == "7"
        assert "127.0.0.1 holds 2 event streams already" in assert_error_body(third)["detail"]

        from_b = await held.enter_async_context(b.stream("GET", "/changes"))
        assert from_b.status_code == 200
        over = await b.get("/changes")
        assert over.status_code == 429
        assert "serves 3 event streams already" in assert_error_body(over)["detail"]

        await first.aclose()  # a disconnect gives the slot back
        slots = app.state.services.slots
        await wait_for(lambda: slots.open == 2, 10, "the closed stream's slot was not freed")
        again = await held.enter_async_context(a.stream("GET", "/changes"))
        assert again.status_code == 200


async def test_auth_streams_need_the_token_when_one_is_set(
    settings: RegistrySettings, redis: aioredis.Redis, add_agent: AddAgent, broker: SessionBroker
) -> None:
    await add_agent("retriever", 9001)
    session = await broker.negotiate({"r": "search"})
    app = create_app(settings.model_copy(update={"token": SecretStr("s3cret")}), redis=redis)
    good = {"Authorization": "Bearer s3cret"}
    async with (
        running(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http,
    ):
        for path in ("/changes", f"/sessions/{session.id}/events"):
            for headers in ({}, {"Authorization": "Bearer nope"}):
                async with http.stream("GET", path, headers=headers) as refused:
                    assert refused.status_code == 401, path
                    assert refused.headers["www-authenticate"] == "Bearer"
        async with http.stream("GET", "/changes", headers=good) as allowed:
            assert allowed.status_code == 200
        log = await http.get(f"/sessions/{session.id}/events?follow=false", headers=good)
        assert log.status_code == 200
        assert (await http.get("/agents")).status_code == 200  # plain reads stay open
        assert (await http.get(f"/sessions/{session.id}")).status_code == 200

    schema = app.openapi()
    assert schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    assert schema["paths"]["/changes"]["get"]["security"] == [{"bearer": []}]
    assert schema["paths"]["/agents"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/agents"]["get"]


async def test_fault_stream_hub_delivers_each_entry_once_in_order_to_late_joiners(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    """Subscribers joining before, during and after a burst of writes, each from its own
    cursor, get exactly the entries after it, in order, while one reader serves them all."""
    from registry.streams import StreamHub

    key = f"{redis_prefix}:test:stream"
    first = [await redis.xadd(key, {"n": i}) for i in range(5)]
    hub = StreamHub(redis, block_ms=50)
    total = 300

    async def collect(after: str) -> list[int]:
        seen: list[int] = []
        async for batch in hub.entries(key, after, idle_ms=200):
            seen += [int(fields["n"]) for _, fields in batch]
            if seen and seen[-1] == total - 1:
                return seen
        raise AssertionError("the subscription ended")

    halfway, joined = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        for i in range(5, total):
            await redis.xadd(key, {"n": i})
            if i == total // 2:  # a subscriber joins in the middle of the burst
                halfway.set()
                await joined.wait()

    try:
        early = asyncio.create_task(collect("0-0"))
        resumed = asyncio.create_task(collect(first[1].decode()))
        await wait_for(lambda: hub.subscribers == 2, 10, "the first two did not subscribe")
        writer = asyncio.create_task(write())
        await asyncio.wait_for(halfway.wait(), 10)
        late = asyncio.create_task(collect("0-0"))
        await wait_for(lambda: hub.subscribers == 3, 10, "the late one did not subscribe")
        joined.set()
        results = await asyncio.wait_for(asyncio.gather(early, resumed, late, writer), 30)
        assert results[0] == list(range(total))
        assert results[1] == list(range(2, total))
        assert results[2] == list(range(total))
        assert hub.subscribers == 0
    finally:
        await hub.aclose()


async def test_fault_stream_hub_ends_a_stream_that_falls_behind_or_loses_redis(
    own_valkey: Any,
) -> None:
    from registry.streams import StreamEnded, StreamHub

    client = aioredis.from_url(own_valkey.url)
    hub = StreamHub(client, block_ms=20, buffer=2)
    try:
        slow = hub.entries("s", "0-0", idle_ms=100)
        assert await anext(slow) == []  # joined, nothing yet
        for i in range(20):  # each write is its own batch: far more than 2 behind
            written = (await client.xadd("s", {"n": i})).decode()
            await wait_for(lambda at=written: hub.tail("s") == at, 10, "the hub did not read it")

        async def drain() -> None:
            async for _ in slow:
                pass

        with pytest.raises(StreamEnded, match="fell too far behind"):
            await drain()

        waiting = hub.entries("s", (await client.xrevrange("s", count=1))[0][0].decode())
        assert await anext(waiting) == []  # caught up
        pending = asyncio.create_task(anext(waiting))  # subscribed: it waits on the hub
        own_valkey.stop()
        with pytest.raises(StreamEnded, match="Redis failed"):
            await asyncio.wait_for(pending, 10)
    finally:
        await hub.aclose()
        await client.aclose()


async def test_fault_following_a_closed_session_ends_at_once(
    app: FastAPI, broker: SessionBroker, add_agent: AddAgent
) -> None:
    await add_agent("retriever", 9001)
    session = await broker.negotiate({"r": "search"})
    await broker.release(session.id)
    async with (
        running(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http,
    ):
        started = asyncio.get_running_loop().time()
        log = await http.get(f"/sessions/{session.id}/events")  # follow=true
        assert log.status_code == 200
        assert asyncio.get_running_loop().time() - started < 2  # not an idle period
        assert "session.released" in log.text


# -- 2. numeric bounds ---------------------------------------------------------------------


async def test_limit_lease_is_bounded_in_the_schema_the_code_and_lua(
    app_client: httpx.AsyncClient,
    add_agent: AddAgent,
    broker: SessionBroker,
    registry: Registry,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    agent = await add_agent("retriever", 9001, capacity=5)
    roles = {"retriever": "search"}
    for lease in (1e306, 1e20, 1e19, 1e16, 3601, 0, -1):
        response = await app_client.post("/sessions", json={"roles": roles, "lease_s": lease})
        assert response.status_code == 422, (lease, response.text)
        assert_error_body(response)
    nan = b'{"roles": {"retriever": "search"}, "lease_s": NaN}'
    response = await app_client.post(
        "/sessions", content=nan, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await app_client.get("/sessions")).json() == []
    assert (await registry.get(agent.id)).leased == 0  # type: ignore[union-attr]

    session = await broker.negotiate(roles, lease_s=30)
    for lease in (1e306, 1e20, 3601):
        renewed = await app_client.post(f"/sessions/{session.id}/renew", json={"lease_s": lease})
        assert renewed.status_code == 422, (lease, renewed.text)
    with pytest.raises(InvalidRequest, match="max_session_lease_s"):
        await broker.renew(session.id, float("inf"))
    with pytest.raises(InvalidRequest, match="max_session_lease_s"):
        await broker.negotiate(roles, lease_s=1e20)

    # Agents may run the scripts themselves: Lua refuses what the API refuses.
    with pytest.raises(ResponseError, match="lease"):
        await lua.RENEW(redis, [keys.session(session.id), keys.sessions], [str(10**23), session.id])
    with pytest.raises(ResponseError, match="lease"):
        await lua.RENEW(redis, [keys.session(session.id), keys.sessions], ["1e+303", session.id])
    got = await app_client.get(f"/sessions/{session.id}")
    assert got.status_code == 200
    assert got.json()["expires"] == session.expires  # nothing was written


async def test_limit_a_bad_session_record_never_breaks_a_listing(
    app_client: httpx.AsyncClient,
    redis: aioredis.Redis,
    keys: RedisKeys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Records as the unbounded versions stored them (``1e+303``, negative expiries) read
    back; a record that is not a session at all is skipped, not a 500 for everyone."""
    fields = {
        "roles": '{"r":"search"}',
        "bindings": '{"r":"x@127.0.0.1-1"}',
        "created": "1700000000000",
        "trace_id": "ab" * 16,
        "state": "released",
        "seq": "1",
    }
    for sid, expires in (("huge", "1e+303"), ("negative", "-8.446744073709552e+18")):
        await redis.hset(keys.session(sid), mapping={**fields, "id": sid, "expires": expires})
        await redis.zadd(keys.closed_sessions, {sid: 1})
    await redis.hset(keys.session("junk"), mapping={"id": "junk", "roles": "not json"})
    await redis.zadd(keys.closed_sessions, {"junk": 2})

    with caplog.at_level(logging.WARNING, logger="registry.sessions"):
        listed = await app_client.get("/sessions")
    assert listed.status_code == 200, listed.text
    assert sorted(s["id"] for s in listed.json()) == ["huge", "negative"]
    assert any("unreadable session record" in r.getMessage() for r in caplog.records)
    huge = await app_client.get("/sessions/huge")
    assert huge.status_code == 200
    assert huge.json()["expires"] == 2**63 - 1
    assert (await app_client.get("/sessions/negative")).json()["expires"] < 0
    junk = await app_client.get("/sessions/junk")
    assert "cannot read" in assert_error_body(junk)["detail"]


async def test_limit_every_numeric_input_is_bounded(
    app_client: httpx.AsyncClient,
    registry: Registry,
    broker: SessionBroker,
    session_log: SessionLog,
    add_agent: AddAgent,
    make_card: MakeCard,
    redis: aioredis.Redis,
    keys: RedisKeys,
) -> None:
    agent = await add_agent("retriever", 9001)
    session = await broker.negotiate({"r": "search"})

    # heartbeat load, in Python and in Lua
    with pytest.raises(InvalidRequest, match="load"):
        await registry.heartbeat(agent.id, load=10**9)
    for load in ("1e9", "-1", "abc", "1.5"):
        with pytest.raises(ResponseError, match="load"):
            await lua.HEARTBEAT(redis, [keys.agent(agent.id), keys.changes], [agent.id, load, 10])
    assert (await registry.get(agent.id)).load == 0  # type: ignore[union-attr]

    # capacity, from a card and straight into Lua
    with pytest.raises(InvalidCard, match="capacity"):
        await registry.register(make_card("big", "http://127.0.0.1:9002", capacity=10**7))
    card = card_to_dict(make_card("nan", "http://127.0.0.1:9003"))
    body = json.dumps(card).replace('"max_sessions": 2.0', '"max_sessions": NaN')
    assert "NaN" in body
    response = await app_client.post(
        "/agents", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    args = ["lua-id", "{}", "lua", "http://127.0.0.1:1", "1e9", "[]", "[]"]
    args += [keys.skill_prefix(), keys.tag_prefix(), 10, "http://127.0.0.1:1", 1000]
    with pytest.raises(ResponseError, match="capacity"):
        await lua.REGISTER(redis, [keys.agent("lua-id"), keys.agents, keys.changes], args)
    assert await registry.get("lua-id") is None

    # page sizes
    for limit in (0, 10_001):
        assert (await app_client.get("/sessions", params={"limit": limit})).status_code == 422
    with pytest.raises(InvalidRequest, match="limit"):
        await broker.list(limit=0)
    with pytest.raises(InvalidRequest, match="count"):
        await session_log.read(session.id, count=0)
    with pytest.raises(InvalidRequest, match="count"):
        await registry.changes(count=10**6)

    # stream ids to resume after
    for after in ("99999999999999999999999", "1-99999999999999999999", "abc", "1-2-3", "$"):
        events = await app_client.get(
            f"/sessions/{session.id}/events", params={"after": after, "follow": "false"}
        )
        assert events.status_code == 422, (after, events.text)
        assert "not a stream id" in assert_error_body(events)["detail"]
        feed = await app_client.get("/changes", params={"after": after})
        assert feed.status_code == 422, (after, feed.text)
    with pytest.raises(InvalidRequest, match="not a stream id"):
        await registry.changes(after="99999999999999999999999")


# -- 3. registration take-over and the id alphabet -------------------------------------------


async def test_auth_a_live_instance_id_cannot_be_taken_over(
    settings: RegistrySettings,
    redis: aioredis.Redis,
    keys: RedisKeys,
    make_card: MakeCard,
    httpserver: HTTPServer,
) -> None:
    settings = settings.model_copy(update={"heartbeat_interval_s": 10, "heartbeat_ttl_s": 30})
    registry = Registry(redis, settings, keys=keys)
    app = create_app(settings, redis=redis)
    true_card = make_card("retriever", "http://127.0.0.1:9001")
    await registry.register(true_card, instance_id="retriever-1", verify=False)
    held = await registry.get("retriever-1")  # the first registration took effect
    assert held is not None
    assert (held.url, held.state) == ("http://127.0.0.1:9001", "healthy")

    base = httpserver.url_for("/").rstrip("/")
    impostor = card_to_dict(make_card("retriever", base, [("search", ["retrieval"])]))
    httpserver.expect_request(CARD_PATH).respond_with_json(impostor)
    async with api(app) as http:
        taken = await http.post("/agents", json=impostor, params={"instance_id": "retriever-1"})
        assert taken.status_code == 409, taken.text
        detail = assert_error_body(taken)["detail"]
        assert "held by the live instance at http://127.0.0.1:9001" in detail
        assert (await registry.get("retriever-1")).url == "http://127.0.0.1:9001"  # type: ignore[union-attr]
        with pytest.raises(RegistryError, match="held by the live instance"):
            await registry.register(
                make_card("retriever", base), instance_id="retriever-1", verify=False
            )

        # The instance itself re-registers (a restart) as before.
        again = await registry.register(true_card, instance_id="retriever-1", verify=False)
        assert again.url == "http://127.0.0.1:9001"

        # Offline (its heartbeat older than the TTL): another address may take the id.
        await redis.hset(keys.agent("retriever-1"), "last_seen", 1)
        assert (await registry.get("retriever-1")).state == AgentState.OFFLINE  # type: ignore[union-attr]
        moved = await http.post("/agents", json=impostor, params={"instance_id": "retriever-1"})
        assert moved.status_code == 201, moved.text
        assert moved.json()["url"] == base

        # Deregistered: free as well.
        assert (await http.delete("/agents/retriever-1")).status_code == 204
        back = await registry.register(true_card, instance_id="retriever-1", verify=False)
        assert back.url == "http://127.0.0.1:9001"


async def test_limit_ids_and_names_are_restricted_to_the_safe_alphabet(
    app_client: httpx.AsyncClient,
    registry: Registry,
    broker: SessionBroker,
    add_agent: AddAgent,
    make_card: MakeCard,
) -> None:
    card = make_card("retriever", "http://127.0.0.1:9001")
    wire = card_to_dict(card)
    for bad in BAD_IDS:
        with pytest.raises(InvalidRequest, match="is not usable"):
            await registry.register(card, instance_id=bad, verify=False)
        response = await app_client.post("/agents", json=wire, params={"instance_id": bad})
        assert response.status_code == 422, (bad, response.text)
        detail = assert_error_body(response)["detail"]
        assert "instance_id" in detail
        assert "a-z 0-9" in detail
    for bad in BAD_NAMES:
        named = {**wire, "name": bad}
        with pytest.raises(InvalidCard, match=r"agent name|name is empty"):
            await registry.register(named, verify=False)
        assert (await app_client.post("/agents", json=named)).status_code == 422
    assert await registry.list() == []

    await add_agent("retriever", 9001)
    session = await broker.negotiate({"retriever": "search"})
    for bad in BAD_NAMES:
        with pytest.raises(InvalidRequest, match="role name"):
            await broker.negotiate({bad: "search"})
        refused = await app_client.post("/sessions", json={"roles": {bad: "search"}})
        assert refused.status_code == 422, (bad, refused.text)
        rebind = await app_client.post(f"/sessions/{session.id}/rebind", json={"role": bad})
        assert rebind.status_code == 422, (bad, rebind.text)

    # What the stack generates fits: default ids (IPv6 too), replica ids, session ids, roles.
    v6 = await registry.register(make_card("writer", "http://[::1]:9002"), verify=False)
    assert v6.id == "writer@--1-9002"
    for name in AGENT_NAMES:
        replica = await registry.register(
            make_card(name, "http://127.0.0.1:9100"), instance_id=f"{name}-w2", verify=False
        )
        assert replica.id == f"{name}-w2"
        await registry.deregister(replica.id)
    opened = await broker.negotiate(
        {"retriever": "search"}, session_id=None, trace_id=None, lease_s=None
    )
    assert opened.id.isalnum()


# -- 4. the API contract ---------------------------------------------------------------------


async def test_fuzz_contract_every_error_has_the_documented_shape(
    app: FastAPI, app_client: httpx.AsyncClient, settings: RegistrySettings, redis: aioredis.Redis
) -> None:
    error_schema = {
        "$ref": "#/components/schemas/ErrorBody",
        "components": app.openapi()["components"],
    }
    json_type = {"content-type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000
    requests: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/sessions", {"json": {}}, 422),
        ("POST", "/sessions", {"json": {"roles": {"": "x"}}}, 422),
        ("POST", "/sessions", {"json": {"roles": {"r": "nobody"}}}, 409),
        ("POST", "/agents", {"json": {}}, 422),
        ("GET", "/agents", {"params": {"healthy_only": "maybe"}}, 422),
        ("POST", "/sessions/s1/renew", {"content": b"{bad", "headers": json_type}, 422),
        ("POST", "/sessions/s1/rebind", {"content": b"{bad", "headers": json_type}, 422),
        ("POST", "/sessions/s1/renew", {"content": b"\xff\xfe\x00", "headers": json_type}, 422),
        ("POST", "/sessions/s1/rebind", {"content": deep, "headers": json_type}, 422),
        ("GET", "/sessions/unknown", {}, 404),
        ("GET", "/no/such/path", {}, 404),
        ("PUT", "/sessions", {}, 405),
    ]
    for method, path, kwargs, status in requests:
        response = await app_client.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        body = assert_error_body(response)
        jsonschema.validate(body, error_schema)
    invalid = (await app_client.post("/sessions", json={"roles": {"": "x"}})).json()
    assert invalid["errors"][0]["loc"][:2] == ["body", "roles"]
    assert "not a usable name" in invalid["detail"]

    small = create_app(settings.model_copy(update={"max_request_bytes": 100}), redis=redis)
    async with api(small) as http:
        too_big = await http.post("/agents", content=b"{" + b" " * 200 + b"}", headers=json_type)
        assert too_big.status_code == 413
        jsonschema.validate(assert_error_body(too_big), error_schema)
    async with api(app, peer="10.9.9.9") as http:
        outside = await http.post("/sessions", json={"roles": {"r": "s"}})
        assert outside.status_code == 403
        jsonschema.validate(assert_error_body(outside), error_schema)


async def test_fuzz_contract_options_and_405_name_the_real_methods(
    app_client: httpx.AsyncClient,
) -> None:
    expected = {
        "/agents/x@127.0.0.1-1": {"GET", "DELETE", "OPTIONS"},
        "/agents": {"GET", "POST", "OPTIONS"},
        "/sessions": {"GET", "POST", "OPTIONS"},
        "/sessions/s1": {"GET", "DELETE", "OPTIONS"},
        "/sessions/s1/renew": {"POST", "OPTIONS"},
    }
    for path, methods in expected.items():
        options = await app_client.options(path)
        assert options.status_code == 204, (path, options.text)
        assert set(options.headers["allow"].split(", ")) == methods, path
        wrong = await app_client.request("PATCH", path)
        assert wrong.status_code == 405, path
        assert set(wrong.headers["allow"].split(", ")) == methods, path
        assert_error_body(wrong)


async def test_fuzz_contract_schema_refuses_what_the_code_refuses(
    app: FastAPI, settings: RegistrySettings
) -> None:
    schema = app.openapi()
    components = schema["components"]
    assert "HTTPValidationError" not in components["schemas"]

    def body_schema(path: str, method: str) -> dict[str, Any]:
        content = schema["paths"][path][method]["requestBody"]["content"]
        return {**content["application/json"]["schema"], "components": components}

    def valid(instance: Any, against: dict[str, Any]) -> bool:
        return jsonschema.Draft202012Validator(against).is_valid(instance)

    agents = body_schema("/agents", "post")
    assert not valid({}, agents)
    assert not valid({"name": "x"}, agents)
    negotiate = body_schema("/sessions", "post")
    assert valid({"roles": {"writer": "write"}, "lease_s": 30}, negotiate)
    for bad in (
        {"roles": {}},
        {"roles": {"": "write"}},
        {"roles": {"Writer": "write"}},
        {"roles": {"writer": ""}},
        {"roles": {"writer": "write"}, "lease_s": settings.max_session_lease_s + 1},
        {"roles": {"writer": "write"}, "trace_id": "0" * 32},
    ):
        assert not valid(bad, negotiate), bad
    assert not valid({"role": ""}, body_schema("/sessions/{session_id}/rebind", "post"))

    for path in ("/changes", "/sessions/{session_id}/events"):
        operation = schema["paths"][path]["get"]
        after = next(p for p in operation["parameters"] if p["name"] == "after")["schema"]
        assert not valid("abc", after)
        assert not valid("99999999999999999999-1", after)
        assert valid("1700000000000-0", after)
        assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
        assert "429" in operation["responses"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "422" in operation["responses"]:
                content = operation["responses"]["422"]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                    method,
                    path,
                )


async def test_fault_card_fetch_failures_all_read_the_same(
    app_client: httpx.AsyncClient,
    make_card: MakeCard,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever listens (or not) at a card's address, the answer is one message: the API
    tells nobody which ports are open. The log has the reason."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # the behaviour under test: accepts, never answers

    hanging = await asyncio.start_server(silent, "127.0.0.1", 0)
    hanging_port = hanging.sockets[0].getsockname()[1]
    base = httpserver.url_for("/").rstrip("/")
    served = {
        "nothing listens": (f"http://127.0.0.1:{closed_port()}", None),
        "never answers": (f"http://127.0.0.1:{hanging_port}", None),
        "404": (base, lambda: httpserver.expect_request(CARD_PATH).respond_with_data("", 404)),
        "not JSON": (base, lambda: httpserver.expect_request(CARD_PATH).respond_with_data("hi")),
        "not a card": (base, lambda: httpserver.expect_request(CARD_PATH).respond_with_json([])),
    }
    details = {}
    try:
        with caplog.at_level(logging.WARNING, logger="registry.admission"):
            for kind, (url, serve) in served.items():
                httpserver.clear_all_handlers()
                if serve is not None:
                    serve()
                card = card_to_dict(make_card("retriever", url))
                response = await app_client.post("/agents", json=card)
                assert response.status_code == 403, (kind, response.text)
                details[kind] = assert_error_body(response)["detail"].replace(url, "URL")
    finally:
        hanging.close()
    assert len(set(details.values())) == 1, details
    assert "could not fetch a valid agent card from URL" in next(iter(details.values()))
    reasons = [r for r in caplog.records if r.getMessage() == "card verification failed"]
    assert len(reasons) == len(served)
    assert all(r.levelno == logging.WARNING for r in reasons)


async def test_fuzz_card_schema_mirrors_the_sdk_card(app: FastAPI) -> None:
    """The POST /agents body schema names exactly the fields of a2a-sdk's AgentCard, at
    every level: an SDK upgrade that adds a field fails here, not in production."""
    from a2a.types import AgentCard as Card
    from google.protobuf.descriptor import Descriptor, FieldDescriptor

    components = app.openapi()["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while True:
            if "$ref" in node:
                node = components[node["$ref"].rsplit("/", 1)[1]]
            elif "items" in node:
                node = node["items"]
            elif "anyOf" in node:
                node = next(n for n in node["anyOf"] if n.get("type") != "null")
            else:
                return node

    def compare(message: Descriptor, node: dict[str, Any], where: str) -> None:
        properties = resolve(node)["properties"]
        assert set(properties) == {f.json_name for f in message.fields}, where
        assert resolve(node).get("additionalProperties") is False, where
        for field in message.fields:
            kind = field.message_type
            if kind is None or kind.full_name.startswith("google.protobuf."):
                continue
            child = resolve(properties[field.json_name])
            if kind.GetOptions().map_entry:
                value = kind.fields_by_name["value"]
                if value.type != FieldDescriptor.TYPE_MESSAGE:
                    continue
                kind, child = value.message_type, child["additionalProperties"]
            compare(kind, child, f"{where}.{field.json_name}")

    compare(Card.DESCRIPTOR, components["CardBody"], "card")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def app(settings: RegistrySettings, redis: aioredis.Redis) -> FastAPI:
    return create_app(settings, redis=redis)


@pytest.fixture
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api(app) as http:
        yield http
