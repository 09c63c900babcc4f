"""Fixtures of the registry tests: short timings, an isolated key prefix, card helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from a2a.types import AgentCard

from protocol.cards import CardSpec, Skill, build_agent_card
from registry import RedisKeys, Registry, RegistrySettings, SessionBroker, SessionLog
from registry.records import AgentRecord


@pytest.fixture
def settings(redis_url: str, redis_prefix: str) -> RegistrySettings:
    return RegistrySettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        heartbeat_interval_s=0.2,
        heartbeat_ttl_s=0.6,
        offline_retention_s=60,
        sweep_interval_s=0.1,
        connect_timeout_s=1,
        card_fetch_timeout_s=2,
        token=None,
        allowed_networks=["127.0.0.0/8", "::1/128"],
    )


@pytest.fixture
def keys(redis_prefix: str) -> RedisKeys:
    return RedisKeys(prefix=redis_prefix)


@pytest.fixture
def registry(redis: aioredis.Redis, settings: RegistrySettings, keys: RedisKeys) -> Registry:
    return Registry(redis, settings, keys=keys)


RegistryWith = Callable[..., Registry]


@pytest.fixture
def registry_with(
    redis: aioredis.Redis, settings: RegistrySettings, keys: RedisKeys
) -> RegistryWith:
    """``registry_with(**changes)``: a registry on the test's keys with changed settings."""

    def make(**changes: Any) -> Registry:
        return Registry(redis, settings.model_copy(update=changes), keys=keys)

    return make


@pytest.fixture
def broker(registry: Registry) -> SessionBroker:
    return registry.sessions


@pytest.fixture
def session_log(redis: aioredis.Redis, settings: RegistrySettings, keys: RedisKeys) -> SessionLog:
    return SessionLog(redis, settings, keys=keys)


def build_card(
    name: str,
    base_url: str,
    skills: Sequence[tuple[str, Sequence[str]]] = (("search", ("retrieval",)),),
    *,
    capacity: int = 2,
) -> AgentCard:
    """A real card (``build_agent_card``) offering ``skills`` as (id, tags) pairs."""
    spec = CardSpec(
        name=name,
        description=f"{name} for tests",
        skills=[
            Skill(id=skill, name=skill.title(), description=f"does {skill}", tags=list(tags))
            for skill, tags in skills
        ],
        capacity=capacity,
    )
    return build_agent_card(spec, base_url)


async def register_agent(
    registry: Registry,
    name: str,
    port: int,
    skills: Sequence[tuple[str, Sequence[str]]] = (("search", ("retrieval",)),),
    *,
    capacity: int = 2,
) -> AgentRecord:
    """Register an agent at 127.0.0.1:``port`` without fetching its card (no server)."""
    card = build_card(name, f"http://127.0.0.1:{port}", skills, capacity=capacity)
    return await registry.register(card, verify=False)


async def redis_now_ms(redis: aioredis.Redis) -> int:
    """The Redis server clock (``TIME``) in epoch ms: the clock every record's times use."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def blocked_stream_reads(redis: aioredis.Redis) -> int:
    """Clients blocked in ``XREAD`` on the server right now (``CLIENT LIST``)."""
    return sum(
        1 for c in await redis.client_list() if c.get("cmd") == "xread" and "b" in c["flags"]
    )


MakeCard = Callable[..., AgentCard]
AddAgent = Callable[..., Awaitable[AgentRecord]]


HeardAgo = Callable[[str, int], Awaitable[None]]


@pytest.fixture
def heard_ago(redis: aioredis.Redis, keys: RedisKeys) -> HeardAgo:
    """``await heard_ago(instance_id, ms)``: the instance's last heartbeat ``ms`` before now on
    the Redis clock. Tests age an instance so, never by waiting: no heartbeat window races
    the machine's speed."""

    async def age(instance_id: str, ms: int) -> None:
        now = await redis_now_ms(redis)
        await redis.hset(keys.agent(instance_id), "last_seen", now - ms)

    return age


@pytest.fixture
def make_card() -> MakeCard:
    """``make_card(name, base_url, skills=[(id, tags)], capacity=2)``: a real card."""
    return build_card


@pytest.fixture
def add_agent(registry: Registry) -> AddAgent:
    """``await add_agent(name, port, skills, capacity=2, on=registry)``: a registered agent."""

    async def add(
        name: str, port: int, *args: Any, on: Registry | None = None, **kw: Any
    ) -> AgentRecord:
        return await register_agent(on or registry, name, port, *args, **kw)

    return add
