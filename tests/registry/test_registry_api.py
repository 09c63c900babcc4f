"""The registry HTTP API, through ASGI and through a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import SecretStr
from pytest_httpserver import HTTPServer

from protocol.cards import CARD_PATH, card_to_dict
from protocol.http import running
from registry import Registry, RegistrySettings, SessionBroker, SessionLog
from registry.api import create_app
from registry.records import AgentRecord
from scriptorium.testing import metric_value, wait_for

AddAgent = Callable[..., Awaitable[AgentRecord]]


@pytest.fixture
def app(settings: RegistrySettings, redis: aioredis.Redis) -> FastAPI:
    return create_app(settings, redis=redis)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        yield http


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    async with running(app) as url:
        yield url


def parse_sse(body: str) -> list[dict[str, str]]:
    """SSE blocks as {id, event, data} dicts (comments such as pings skipped)."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_list_filter_and_get_agents(client: httpx.AsyncClient, add_agent: AddAgent) -> None:
    retriever = await add_agent("retriever", 9001, [("search", ["retrieval"])], capacity=3)
    await add_agent("writer", 9002, [("write", ["text"])])

    listed = (await client.get("/agents")).json()
    assert [a["id"] for a in listed] == [retriever.id, "writer@127.0.0.1-9002"]
    first = listed[0]
    assert first["card"]["name"] == "retriever"
    assert first["state"] == "healthy"
    assert (first["capacity"], first["leased"], first["load"]) == (3, 0, 0)
    assert "card_json" not in first

    by_skill = (await client.get("/agents", params={"skill": "write"})).json()
    assert [a["name"] for a in by_skill] == ["writer"]
    by_tag = (await client.get("/agents", params={"tag": "retrieval", "healthy_only": True})).json()
    assert [a["name"] for a in by_tag] == ["retriever"]

    one = await client.get(f"/agents/{retriever.id}")
    assert one.status_code == 200
    assert one.json()["url"] == "http://127.0.0.1:9001"
    missing = await client.get("/agents/ghost@127.0.0.1-1")
    assert missing.status_code == 404
    assert "ghost@127.0.0.1-1" in missing.json()["detail"]


async def test_register_over_http_verifies_the_card(
    client: httpx.AsyncClient, httpserver: HTTPServer, make_card: Callable[..., object]
) -> None:
    base = httpserver.url_for("/").rstrip("/")
    card = card_to_dict(make_card("retriever", base))  # type: ignore[arg-type]
    httpserver.expect_request(CARD_PATH).respond_with_json(card)

    created = await client.post("/agents", json=card, params={"instance_id": "retriever-1"})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "retriever-1"
    assert (await client.get("/agents/retriever-1")).json()["card"] == card

    card["description"] = "something else"
    spoofed = await client.post("/agents", json=card)
    assert spoofed.status_code == 422
    assert "differs from the submitted one" in spoofed.json()["detail"]

    assert (await client.delete("/agents/retriever-1")).status_code == 204
    assert (await client.delete("/agents/retriever-1")).status_code == 404


async def test_invalid_card_gets_422_with_reason_and_stores_nothing(
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    redis_prefix: str,
    make_card: Callable[..., object],
) -> None:
    card = card_to_dict(make_card("retriever", "http://127.0.0.1:9001"))  # type: ignore[arg-type]
    card["skills"] = []
    response = await client.post("/agents", json=card)
    assert response.status_code == 422
    assert "body.skills: List should have at least 1 item" in response.json()["detail"]
    assert [key async for key in redis.scan_iter(match=f"{redis_prefix}:*")] == []


async def test_writes_from_outside_allowed_networks_get_403(
    app: FastAPI, make_card: Callable[..., object]
) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        card = card_to_dict(make_card("x", "http://127.0.0.1:9001"))  # type: ignore[arg-type]
        refused = await http.post("/agents", json=card)
        assert refused.status_code == 403
        assert "10.9.9.9" in refused.json()["detail"]
        assert (await http.get("/agents")).status_code == 200  # reads stay open


async def test_sessions_over_http(client: httpx.AsyncClient, add_agent: AddAgent) -> None:
    agent = await add_agent("retriever", 9001, capacity=1)
    created = await client.post("/sessions", json={"roles": {"retriever": "search"}, "lease_s": 30})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["bindings"] == {"retriever": agent.id}

    full = await client.post("/sessions", json={"roles": {"retriever": "search"}})
    assert full.status_code == 409
    assert "no healthy instance with free capacity offers skill 'search'" in full.json()["detail"]

    assert (await client.get(f"/sessions/{session['id']}")).json() == session
    assert [s["id"] for s in (await client.get("/sessions")).json()] == [session["id"]]
    rebind = await client.post(f"/sessions/{session['id']}/rebind", json={"role": "retriever"})
    assert rebind.status_code == 409  # no other instance
    renewed = await client.post(f"/sessions/{session['id']}/renew", json={"lease_s": 60})
    assert renewed.json()["expires"] > session["expires"]

    assert (await client.delete(f"/sessions/{session['id']}")).status_code == 204
    assert (await client.delete(f"/sessions/{session['id']}")).status_code == 204  # idempotent
    released = (await client.get("/sessions", params={"state": "released"})).json()
    assert [s["id"] for s in released] == [session["id"]]
    assert (await client.get("/agents")).json()[0]["leased"] == 0

    unknown = await client.get("/sessions/does-not-exist")
    assert unknown.status_code == 404
    assert "does-not-exist" in unknown.json()["detail"]
    bad = await client.post("/sessions", json={"roles": {}})
    assert bad.status_code == 422


async def test_session_events_sse_honours_last_event_id(
    app: FastAPI,
    served: str,
    broker: SessionBroker,
    session_log: SessionLog,
    add_agent: AddAgent,
) -> None:
    await add_agent("retriever", 9001, capacity=2)
    session = await broker.negotiate({"retriever": "search"})
    sent = [
        await session_log.append(session.id, sender="o", recipient="r", kind=f"step{i}")
        for i in range(3)
    ]
    url = f"/sessions/{session.id}/events"
    async with httpx.AsyncClient(base_url=served, trust_env=False, timeout=10) as http:
        replay = await http.get(
            url, params={"follow": "false"}, headers={"Last-Event-ID": sent[0].id}
        )
        assert replay.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(replay.text)
        assert [(e["id"], e["event"]) for e in events] == [
            (sent[1].id, "step1"),
            (sent[2].id, "step2"),
        ]
        assert json.loads(events[0]["data"])["seq"] == 3

        by_query = parse_sse(
            (await http.get(url, params={"follow": "false", "after": sent[1].id})).text
        )
        assert [e["event"] for e in by_query] == ["step2"]

        live: list[dict[str, str]] = []

        async def follow() -> None:
            headers = {"Last-Event-ID": sent[2].id}
            async with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                live.extend(parse_sse((await response.aread()).decode()))

        follower = asyncio.create_task(follow())
        hub = app.state.services.hub  # what follows is delivered live, once it subscribed
        await wait_for(lambda: hub.subscribers == 1, 10, "the stream did not subscribe")
        await session_log.append(session.id, sender="r", recipient="o", kind="live")
        await broker.release(session.id)
        await asyncio.wait_for(follower, 10)  # the stream ends once the session is released
        assert [e["event"] for e in live] == ["live", "session.released"]

        assert (await http.get("/sessions/unknown/events")).status_code == 404


async def test_changes_sse_replays_from_the_start(served: str, add_agent: AddAgent) -> None:
    agent = await add_agent("retriever", 9001)
    async with (
        httpx.AsyncClient(base_url=served, trust_env=False, timeout=10) as http,
        http.stream("GET", "/changes", params={"after": "0"}) as response,
    ):
        lines = response.aiter_lines()
        block: list[str] = []
        while len(block) < 3:
            line = await asyncio.wait_for(anext(lines), 5)
            if line and not line.startswith(":"):
                block.append(line)
    event = parse_sse("\n".join(block))[0]
    assert event["event"] == "registered"
    assert json.loads(event["data"])["instance_id"] == agent.id


async def test_healthz_and_metrics(
    client: httpx.AsyncClient,
    add_agent: AddAgent,
    broker: SessionBroker,
    settings: RegistrySettings,
    redis: aioredis.Redis,
) -> None:
    await add_agent("retriever", 9001)
    await broker.negotiate({"r": "search"})
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "redis": "ok"})
    await client.get("/agents")

    metrics = (await client.get("/metrics")).text
    requests = "scriptorium_registry_requests_total"
    assert metric_value(metrics, requests, method="GET", route="/agents", status="200") == 1
    assert metric_value(metrics, "scriptorium_registry_agents", state="healthy") == 1
    assert metric_value(metrics, "scriptorium_registry_sessions_active") == 1
    timed = "scriptorium_registry_request_duration_seconds_count"
    assert metric_value(metrics, timed, method="GET", route="/agents") == 1

    second = create_app(settings, redis=redis)  # a second app in one process: no clash
    assert second is not None


async def test_token_guards_writes(
    settings: RegistrySettings, redis: aioredis.Redis, add_agent: AddAgent
) -> None:
    await add_agent("retriever", 9001)
    app = create_app(settings.model_copy(update={"token": SecretStr("s3cret")}), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        body = {"roles": {"r": "search"}}
        missing = await http.post("/sessions", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.post("/sessions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await http.delete("/agents/retriever@127.0.0.1-9001")).status_code == 401
        assert (await http.get("/agents")).status_code == 200
        ok = await http.post("/sessions", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201


async def test_oversized_bodies_get_413(settings: RegistrySettings, redis: aioredis.Redis) -> None:
    app = create_app(settings.model_copy(update={"max_request_bytes": 1000}), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        declared = await http.post("/agents", content=b"{" + b" " * 2000 + b"}")
        assert declared.status_code == 413
        assert "larger than 1000 bytes" in declared.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b" " * 400

        streamed = await http.post(
            "/agents", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


async def test_redis_unreachable_gives_503_with_what_to_do(settings: RegistrySettings) -> None:
    port = closed_port()
    app = create_app(settings.model_copy(update={"redis_url": f"redis://:pw@127.0.0.1:{port}/0"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        response = await http.get("/agents")
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert detail.startswith(f"Redis is unreachable at redis://127.0.0.1:{port}/0: ")
        assert "Start Redis/Valkey or set REDIS_URL" in detail
        assert "pw" not in detail
        assert (await http.post("/sessions", json={"roles": {"r": "s"}})).status_code == 503
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"


async def test_sweeper_runs_in_the_app_and_survives_redis_errors(
    served: str, registry: Registry, add_agent: AddAgent, settings: RegistrySettings
) -> None:
    agent = await add_agent("retriever", 9001)

    async def swept_offline() -> bool:  # the app's sweeper runs every 0.1 s; nobody else sweeps
        states = [c for c in await registry.changes() if c.kind == "state"]
        return [(c.instance_id, c.fields["new"]) for c in states][-1:] == [(agent.id, "offline")]

    await wait_for(swept_offline, 10, "the app's sweeper did not mark the silent agent offline")

    port = closed_port()
    broken = create_app(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"}))
    async with running(broken) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:

        async def sweeps_failed() -> bool:
            response = await http.get("/metrics")
            assert response.status_code == 200, "metrics answer while Redis is down"
            return metric_value(response.text, "scriptorium_registry_sweep_errors_total") >= 2

        await wait_for(sweeps_failed, 10, "failing sweeps were not counted")


async def test_openapi_schema_names_the_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    names = set(schema["components"]["schemas"])
    assert {"NegotiateBody", "Session", "ErrorBody"} <= names
    assert any(name.startswith("AgentRecord") for name in names)
    agents = schema["paths"]["/agents"]["get"]
    assert {p["name"] for p in agents["parameters"]} == {"skill", "tag", "healthy_only"}


async def test_serve_runs_until_cancelled(settings: RegistrySettings) -> None:
    from registry.api import serve

    port = closed_port()
    server = asyncio.create_task(serve(settings, host="127.0.0.1", port=port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:

        async def healthy() -> bool:
            try:
                return (await http.get("/healthz")).json() == {"status": "ok", "redis": "ok"}
            except httpx.TransportError:  # not listening yet
                return False

        await wait_for(healthy, 10, "the served registry did not answer /healthz")
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(server, 10)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")
