"""Registry benchmark: discovery and session negotiation latency on an embedded Valkey.

Run: ``python -c "import asyncio, json; from scriptorium.bench.registry import run;
print(json.dumps(asyncio.run(run())))"``. Latencies are in milliseconds; ``*_per_s`` are
rates. Every measurement comes from the same run against the same server.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import redis.asyncio as aioredis

from protocol.cards import CardSpec, Skill, build_agent_card
from protocol.http import running
from registry.api import create_app
from registry.directory import Registry
from registry.redis_client import Script, redis_client
from registry.settings import RegistrySettings
from scriptorium.valkey import start_valkey

#: (skill id, tag) of the synthetic agents; INSTANCES_PER_SKILL instances each.
SKILLS = (("search", "retrieval"), ("write", "text"), ("critique", "review"), ("generate", "llm"))
INSTANCES_PER_SKILL = 5
LOOKUPS = 5000
HTTP_LOOKUPS = 2000
NEGOTIATIONS = 20_000
SEQUENTIAL_NEGOTIATIONS = 3_000
CONCURRENCY = 16
RAW_CALLS = 5000
WARMUP = 200

#: A minimal five-key lease-like script: the floor under any Lua call of that shape.
_RAW_LEASE = Script(
    "bench_raw_lease",
    "for i = 1, 5 do redis.call('HINCRBY', KEYS[i], 'leased', 1) end return 1",
)


async def run() -> dict[str, float | int]:
    """Start Valkey, register synthetic agents, measure; returns the numbers."""
    server = start_valkey()
    settings = RegistrySettings(
        redis_url=server.connection_url,
        redis_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        heartbeat_interval_s=600,  # nothing heartbeats during the bench
        heartbeat_ttl_s=1800,
        sweep_interval_s=3600,
    )
    # The registry app's own client: socket timeouts, retries, hiredis parsing and packing.
    client = redis_client(settings)
    try:
        registry = Registry(client, settings)
        await _register_agents(registry)
        results: dict[str, float | int] = {
            "agents": len(SKILLS) * INSTANCES_PER_SKILL,
            "hiredis": int(_uses_hiredis(client)),
        }
        results |= _summary("lookup", await _timed(lambda: registry.discover("search"), LOOKUPS))
        results |= await _http_lookups(settings, client)
        results |= await _negotiations(registry)
        agent_key = registry.keys.agent("search-0@127.0.0.1-9000")
        results |= _summary(
            "raw_hget", await _timed(lambda: client.hget(agent_key, "leased"), RAW_CALLS)
        )
        raw_keys = [f"{settings.redis_prefix}:bench:raw:{i}" for i in range(5)]
        results |= _summary(
            "raw_evalsha", await _timed(lambda: _RAW_LEASE(client, raw_keys), RAW_CALLS)
        )
        # Shared machines are noisy: ratios to the raw floor of the same run travel better.
        floor = results["raw_evalsha_p50_ms"] or 0.001
        results["lookup_p50_over_raw_evalsha_p50"] = round(results["lookup_p50_ms"] / floor, 2)
        results["negotiate_p50_over_raw_evalsha_p50"] = round(
            results["negotiate_p50_ms"] / floor, 2
        )
        return results
    finally:
        await client.aclose()
        server.stop()


async def _register_agents(registry: Registry) -> None:
    for skill, tag in SKILLS:
        for i in range(INSTANCES_PER_SKILL):
            spec = CardSpec(
                name=f"{skill}-{i}",
                description=f"Synthetic {skill} agent for the benchmark.",
                skills=[Skill(id=skill, name=skill.title(), description=skill, tags=[tag])],
                capacity=1_000_000,  # negotiations never run out of capacity
            )
            card = build_agent_card(spec, f"http://127.0.0.1:{9000 + i}")
            # verify=False: no HTTP servers serve these cards in this benchmark.
            await registry.register(card, verify=False)


async def _http_lookups(
    settings: RegistrySettings, client: aioredis.Redis
) -> dict[str, float | int]:
    """GET /agents?skill= through uvicorn on a loopback port (client and server share
    this process and event loop, so this includes both sides' Python overhead)."""
    app = create_app(settings, redis=client)
    async with running(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:

        async def lookup() -> None:
            response = await http.get("/agents", params={"skill": "search", "healthy_only": "true"})
            response.raise_for_status()

        return _summary("http_lookup", await _timed(lookup, HTTP_LOOKUPS))


async def _negotiations(registry: Registry) -> dict[str, float | int]:
    """Latency of one caller (``negotiate_*``), then CONCURRENCY callers (``negotiate_at_16_*``
    and ``negotiate_per_s``). Each negotiate is followed by a release, which the latencies
    leave out and the rate includes."""
    broker = registry.sessions
    roles = {"retriever": "search", "writer": "write", "critic": "critique"}
    alone: list[float] = []
    for _ in range(SEQUENTIAL_NEGOTIATIONS):
        start = time.perf_counter()
        session = await broker.negotiate(roles)
        alone.append(time.perf_counter() - start)
        await broker.release(session.id)
    latencies: list[float] = []
    per_caller = NEGOTIATIONS // CONCURRENCY

    async def caller() -> None:
        for _ in range(per_caller):
            start = time.perf_counter()
            session = await broker.negotiate(roles)
            latencies.append(time.perf_counter() - start)
            await broker.release(session.id)

    for _ in range(WARMUP // CONCURRENCY + 1):
        await broker.release((await broker.negotiate(roles)).id)
    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    leaked = sum(r.leased for r in await registry.list())
    if leaked:
        raise RuntimeError(f"{leaked} leases left after releasing every session")
    at_16 = {
        k.replace("negotiate_", f"negotiate_at_{CONCURRENCY}_"): v
        for k, v in _summary("negotiate", latencies).items()
    }
    return (
        _summary("negotiate", alone)
        | at_16
        | {
            "negotiate_per_s": round(len(latencies) / elapsed),
            "negotiate_concurrency": CONCURRENCY,
            "negotiate_roles": len(roles),
        }
    )


async def _timed(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(WARMUP):
        await call()
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)
    return latencies


def _summary(name: str, latencies: list[float]) -> dict[str, float | int]:
    ordered = sorted(latencies)
    return {
        f"{name}_p50_ms": _ms(_percentile(ordered, 0.50)),
        f"{name}_p99_ms": _ms(_percentile(ordered, 0.99)),
        f"{name}_calls": len(ordered),
    }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _uses_hiredis(client: aioredis.Redis) -> bool:
    parser = client.connection_pool.connection_kwargs.get("parser_class")
    if parser is not None:
        return "Hiredis" in parser.__name__
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)
