"""Pytest plugin: a hermetic Redis and a running Scriptorium stack for integration tests.

Installed as the ``scriptorium`` pytest11 entry point, so any project that depends on
Scriptorium gets these fixtures. See ``docs/harness.md``.

Fixtures
--------
``redis_url``      session-wide: ``REDIS_URL`` when set, otherwise an embedded Valkey on a
                   free port (no persistence), stopped at the end of the session.
``redis_prefix``   a key prefix unique to the test, so tests never see each other's keys.
``redis``          a ``redis.asyncio.Redis`` on ``redis_url``; the test's keys are deleted after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from scriptorium.valkey import start_valkey


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis the tests may write to."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = start_valkey()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client; every key under ``redis_prefix`` is deleted afterwards."""
    client = aioredis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
