"""schemathesis against the registry's own OpenAPI schema: no 5xx, every answer as documented.

Every operation is called in-process (ASGI) with examples generated from the schema, valid
and invalid, and each response is checked: not a server error, a documented status, content
type, headers and body schema, invalid input refused, valid input not refused with 4xx
other than the documented business outcomes (401/403/404/409/429), ``Allow`` on 405 and
``OPTIONS``. The app runs against a real Valkey with one healthy agent registered, so the
session operations reach Redis and the Lua scripts. A second pass does the same with a
token set. Bounded: a fixed seed and few examples per operation (both passes about 25 s
on this machine, under load).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
import schemathesis
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi
from starlette.types import Receive, Scope, Send

from registry import Registry, RegistrySettings
from registry.api import create_app
from scriptorium.testing import new_prefix
from tests.registry.conftest import build_card

#: Examples per operation and phase; the streams get fewer (each waits for its timeout).
#: A deeper run: SCRIPTORIUM_FUZZ_EXAMPLES=500 SCRIPTORIUM_FUZZ_SEED=random pytest -k fuzz
MAX_EXAMPLES = int(os.environ.get("SCRIPTORIUM_FUZZ_EXAMPLES", "25"))
STREAM_EXAMPLES = max(1, MAX_EXAMPLES // 6)
STREAM_TIMEOUT_S = 0.3
_SEED = os.environ.get("SCRIPTORIUM_FUZZ_SEED", "20260611")

CONFIG: dict[str, Any] = {
    **({} if _SEED == "random" else {"seed": int(_SEED)}),
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "request-timeout": 10,
    "checks": {
        # Stateful checks: they need links between operations, which this schema has none of.
        "use_after_free": {"enabled": False},
        "ensure_resource_availability": {"enabled": False},
    },
    "operations": [
        {
            # Event streams follow until the session closes: cut each after a short wait.
            "include-path-regex": "^(/changes|/sessions/\\{session_id\\}/events)$",
            "request-timeout": STREAM_TIMEOUT_S,
            "generation": {"max-examples": STREAM_EXAMPLES},
        },
        {
            # A card can be valid by the schema and still refused (422) for rules JSON
            # Schema cannot state: unique skill ids, one host for every interface, an HTTP
            # interface, a capacity in range (documented on the operation).
            "include-name": "POST /agents",
            "checks": {"positive_data_acceptance": {"enabled": False}},
        },
    ],
}


class _FromLoopback:
    """The app as a loopback client sees it (schemathesis's client address is a name, which
    the write check would refuse with 403 before anything else ran)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await self.app(scope, receive, send)


#: The app the schema's calls reach; ``fuzzed_registry`` points it at a registry on the
#: test Valkey. The schema is read at import (collection), from an app with the same
#: settings but no Redis yet.
TARGET = _FromLoopback(None)
SETTINGS = RegistrySettings(
    redis_url="redis://127.0.0.1:1/0",  # replaced by the fixture; never connected
    token=None,
    allowed_networks=["127.0.0.0/8", "::1/128"],
    connect_timeout_s=0.5,
    card_fetch_timeout_s=0.5,
)
schema = schemathesis.openapi.from_dict(
    create_app(SETTINGS).openapi(), config=SchemathesisConfig.from_dict(CONFIG)
)
schema.app = TARGET

#: The same registry with a token: writes and streams declare bearer auth, and calls
#: without (or with a wrong) token must get 401 (`ignored_auth`). Fewer examples: the
#: operations are the same.
TOKEN = "fuzz-token"
GUARDED_TARGET = _FromLoopback(None)
GUARDED_CONFIG = {
    **CONFIG,
    "generation": {**CONFIG["generation"], "max-examples": max(2, MAX_EXAMPLES // 5)},
    "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
    # With a token every POST/PUT/PATCH/DELETE is authenticated before routing, so an
    # unserved write method answers 401, not 405 (who has no token learns no routes). The
    # run without a token checks the 405s.
    "checks": {**CONFIG["checks"], "unsupported_method": {"enabled": False}},
}
guarded_schema = schemathesis.openapi.from_dict(
    create_app(SETTINGS.model_copy(update={"token": SecretStr(TOKEN)})).openapi(),
    config=SchemathesisConfig.from_dict(GUARDED_CONFIG),
)
guarded_schema.app = GUARDED_TARGET


@pytest.fixture(scope="module")
def fuzzed_registry(redis_url: str) -> Iterator[None]:
    prefix = new_prefix()
    settings = SETTINGS.model_copy(update={"redis_url": redis_url, "redis_prefix": prefix})

    async def add_agent() -> None:
        client = aioredis.from_url(redis_url)
        try:
            card = build_card("retriever", "http://127.0.0.1:9001", capacity=1000)
            await Registry(client, settings).register(card, verify=False)
        finally:
            await client.aclose()

    asyncio.run(add_agent())
    TARGET.app = create_app(settings)
    GUARDED_TARGET.app = create_app(settings.model_copy(update={"token": SecretStr(TOKEN)}))
    yield
    schemathesis_asgi.shutdown_lifespans()
    TARGET.app = GUARDED_TARGET.app = None
    client = sync_redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@schema.parametrize()
def test_fuzz_registry_openapi_schema(case: Any, fuzzed_registry: None) -> None:
    case.call_and_validate()


@guarded_schema.parametrize()
def test_fuzz_auth_registry_openapi_schema_with_a_token(case: Any, fuzzed_registry: None) -> None:
    case.call_and_validate()
