"""Authentication over the real A2A wire (JSON-RPC, HTTP+JSON, gRPC) and on the registry.

Agents run in the test's event loop with a real Redis; callers are the a2a-sdk client.
These tests turn auth on explicitly (tests/conftest.py sets SCRIPTORIUM_AUTH=off for the rest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from a2a.types import GetExtendedAgentCardRequest
from a2a.utils.errors import A2AError
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import BaseModel, SecretStr

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.peers import Peers
from agents.scaffold.settings import AgentSettings
from protocol.auth import mint_jwt
from protocol.cards import CARD_PATH, JSONRPC_PATH, CardSpec, Skill
from protocol.client import SkillFailed, call_skill, http_client, open_client, task_data
from protocol.errors import PermissionDeniedError
from protocol.settings import CommonSettings
from registry.api import create_app
from registry.settings import RegistrySettings
from scriptorium.launcher import Stack, auth_env
from scriptorium.testing import StackFactory, running_agent, serve_app, wait_for

TRANSPORTS = ("JSONRPC", "HTTP+JSON", "GRPC")
TOKEN = "tok-" + secrets.token_hex(16)
ALICE_KEY = "alice-" + secrets.token_hex(16)
OPS_KEY = "ops-" + secrets.token_hex(16)
JWT_SECRET = "jwt-" + secrets.token_hex(24)


class Ping(BaseModel):
    """An empty request."""


class Seen(BaseModel):
    """Who the callee saw calling."""

    sub: str


async def whoami(call: SkillCall) -> None:
    await call.emit({"sub": call.context.call_context.user.user_name})


async def purge(call: SkillCall) -> None:
    await call.emit({"sub": call.context.call_context.user.user_name, "purged": True})


CALLEE = AgentParts(
    card=CardSpec(
        name="callee",
        description="Says who called.",
        skills=[
            Skill(id="whoami", name="whoami", description="The caller's subject.", tags=["t"]),
            Skill(
                id="purge",
                name="purge",
                description="Operators only.",
                tags=["t"],
                operator_only=True,
            ),
        ],
        primary_skill="whoami",
    ),
    handlers={"whoami": whoami, "purge": purge},
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    public = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return path


@pytest.fixture
def secured(agent_settings: AgentSettings, jwks_file: Path) -> AgentSettings:
    return agent_settings.model_copy(
        update={
            "auth": "required",
            "token": SecretStr(TOKEN),
            "api_keys": SecretStr(f"alice={ALICE_KEY},ops={OPS_KEY}"),
            "operators": "ops",
            "jwt_secret": SecretStr(JWT_SECRET),
            "jwks_url": jwks_file.as_uri(),
        }
    )


@pytest.fixture
async def callee(secured: AgentSettings) -> AsyncIterator[str]:
    async with running_agent(CALLEE, secured) as url:
        yield url


def _rs256(rsa_key: rsa.RSAPrivateKey, subject: str) -> str:
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + 60}
    return jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "k1"})


async def _whoami(url: str, transport: str, credential: str | None, skill: str = "whoami") -> Any:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    async with http_client(request_timeout_s=10, headers=headers) as http:
        client = await open_client(url, http, transport=transport)
        try:
            return task_data(await call_skill(client, skill, {}))[0]
        finally:
            await client.close()


def _refused(exc: BaseException) -> str:
    """The status a refused call reports, whatever the transport ('401', '403', ...)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        return {
            grpc.StatusCode.UNAUTHENTICATED: "401",
            grpc.StatusCode.PERMISSION_DENIED: "403",
        }.get(code, str(code))
    if isinstance(exc, PermissionDeniedError):
        return "403"
    text = f"{type(exc).__name__}: {exc}"
    text = text.replace("UNAUTHENTICATED", "401").replace("PERMISSION_DENIED", "403")
    return next((code for code in ("401", "403") if code in text), text)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_credentials_on_every_transport(
    callee: str, transport: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    for bad in (None, "wrong", mint_jwt(JWT_SECRET, "late", ttl_s=-120)):
        with pytest.raises((A2AError, grpc.aio.AioRpcError, httpx.HTTPError)) as refused:
            await _whoami(callee, transport, bad)
        assert _refused(refused.value) == "401", (bad, refused.value)
    assert await _whoami(callee, transport, TOKEN) == {"sub": "scriptorium"}
    assert await _whoami(callee, transport, ALICE_KEY) == {"sub": "alice"}
    assert await _whoami(callee, transport, mint_jwt(JWT_SECRET, "hs-user")) == {"sub": "hs-user"}
    assert await _whoami(callee, transport, _rs256(rsa_key, "rs-user")) == {"sub": "rs-user"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_operator_only_skill_needs_the_operator_role(
    callee: str, transport: str
) -> None:
    with pytest.raises((A2AError, grpc.aio.AioRpcError, httpx.HTTPError)) as denied:
        await _whoami(callee, transport, ALICE_KEY, skill="purge")
    assert _refused(denied.value) == "403", denied.value
    assert "operator" in str(
        denied.value.details() if hasattr(denied.value, "details") else denied.value
    )
    assert (await _whoami(callee, transport, OPS_KEY, skill="purge"))["purged"] is True
    roles_jwt = mint_jwt(JWT_SECRET, "carol", roles=["operator"])
    assert (await _whoami(callee, transport, roles_jwt, skill="purge"))["sub"] == "carol"


async def test_auth_refusals_say_what_to_send(callee: str) -> None:
    async with httpx.AsyncClient(headers={"A2A-Version": "1.0"}, timeout=10) as http:
        missing = await http.post(callee + JSONRPC_PATH, json={})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["detail"]
        expired = await http.post(
            callee + "/a2a/rest/message:send",
            json={},
            headers={"Authorization": f"Bearer {mint_jwt(JWT_SECRET, 'x', ttl_s=-120)}"},
        )
        assert expired.status_code == 401
        assert "expired" in expired.json()["detail"]
        body = {
            "message": {
                "messageId": "m1",
                "role": "ROLE_USER",
                "parts": [{"text": "x"}],
            },
            "metadata": {"skill": "purge"},
        }
        forbidden = await http.post(
            callee + "/a2a/rest/message:send",
            json=body,
            headers={"Authorization": f"Bearer {ALICE_KEY}"},
        )
        assert forbidden.status_code == 403
        assert "operator" in forbidden.json()["error"]["message"]


async def test_auth_extended_card_only_when_authenticated(callee: str) -> None:
    async with httpx.AsyncClient(timeout=10) as anonymous:
        public = (await anonymous.get(callee + CARD_PATH)).json()
    assert [s["id"] for s in public["skills"]] == ["whoami"]
    assert public["capabilities"]["extendedAgentCard"] is True
    assert "bearer" in public["securitySchemes"]
    for transport in TRANSPORTS:
        async with http_client(request_timeout_s=10) as http:
            client = await open_client(callee, http, transport=transport)
            with pytest.raises((A2AError, grpc.aio.AioRpcError, httpx.HTTPError)) as refused:
                await client.get_extended_agent_card(GetExtendedAgentCardRequest())
            assert _refused(refused.value) == "401"
            await client.close()
        async with http_client(
            request_timeout_s=10, headers={"Authorization": f"Bearer {ALICE_KEY}"}
        ) as http:
            client = await open_client(callee, http, transport=transport)
            card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
            assert {s.id for s in card.skills} == {"whoami", "purge"}, transport
            await client.close()


async def test_auth_an_agent_calls_another_with_its_own_identity(
    callee: str, secured: AgentSettings
) -> None:
    """The caller's process mints a JWT with sub = its identity; Peers (what agents use to
    call each other) send it, and find the operator-only skill through the extended card."""
    caller = secured.model_copy(
        update={"token": None, "api_keys": None, "identity": "writer-1", "operators": "writer-1"}
    )
    async with Peers.connect(caller, caller="writer") as peers:

        async def registered() -> bool:
            return bool(await peers.directory.discover("whoami"))

        await wait_for(registered, 10, "the callee registered")
        assert (await peers.call("whoami", Ping(), result=Seen)).sub == "writer-1"
        fetched: list[str] = []

        async def note(request: httpx.Request) -> None:
            if b"GetExtendedAgentCard" in request.content or "xtended" in request.url.path:
                fetched.append(str(request.url))

        peers.http.event_hooks["request"].append(note)
        for _ in range(3):
            assert (await peers.call("purge", Ping(), result=Seen)).sub == "writer-1"
        assert len(fetched) == 1, "the extended card is fetched once, not per call"


async def test_auth_registry_writes_and_streams_need_credentials(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    settings = RegistrySettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        auth="required",
        jwt_secret=SecretStr(JWT_SECRET),
    )
    async with (
        serve_app(create_app(settings, redis=redis)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        assert (await http.get("/agents")).status_code == 200  # discovery stays open
        for method, path in (
            ("POST", "/sessions"),
            ("DELETE", "/agents/x"),
            ("GET", "/changes"),
        ):
            response = await http.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert "SCRIPTORIUM_JWT_SECRET" in response.json()["detail"]
        authed = {"Authorization": f"Bearer {mint_jwt(JWT_SECRET, 'op')}"}
        assert (await http.delete("/agents/x", headers=authed)).status_code == 404
        async with http.stream("GET", "/changes", headers=authed) as stream:
            assert stream.status_code == 200


async def test_auth_secrets_never_appear_in_logs(
    secured: AgentSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_agent(CALLEE, secured) as url:
        for transport in TRANSPORTS:
            await _whoami(url, transport, OPS_KEY, skill="purge")
            with pytest.raises((A2AError, grpc.aio.AioRpcError, httpx.HTTPError)):
                await _whoami(url, transport, "wrong")
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert logged
    for secret in (TOKEN, ALICE_KEY, OPS_KEY, JWT_SECRET):
        assert secret not in logged
    assert TOKEN not in repr(secured)
    assert JWT_SECRET not in str(secured.model_dump())


@pytest.mark.parametrize("component", ["registry", "agent"])
def test_auth_required_and_nothing_configured_refuses_to_start(component: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SCRIPTORIUM_AUTH": "required",
        "REDIS_URL": "redis://127.0.0.1:1",
        "HF_HUB_OFFLINE": "1",
    }
    args = (
        ["registry", "--port", "0"]
        if component == "registry"
        else ["agent", "critic", "--port", "0"]
    )
    done = subprocess.run(
        [sys.executable, "-m", "scriptorium", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    for name in (
        "SCRIPTORIUM_TOKEN",
        "SCRIPTORIUM_API_KEYS",
        "SCRIPTORIUM_JWT_SECRET",
        "SCRIPTORIUM_JWKS_URL",
        "SCRIPTORIUM_AUTH=off",
    ):
        assert name in done.stderr


def test_auth_the_launcher_makes_a_token_unless_auth_is_off(tmp_path: Path) -> None:
    on = Stack(CommonSettings(auth="required", data_dir=tmp_path))
    assert on.generated_token
    assert on.settings.token is not None
    token = on.settings.token.get_secret_value()
    assert auth_env(on.settings)["SCRIPTORIUM_TOKEN"] == token
    assert on.settings.auth_headers() == {"Authorization": f"Bearer {token}"}
    assert token not in on.auth_summary()
    assert "stack-token" in on.auth_summary()
    off = Stack(CommonSettings(auth="off", data_dir=tmp_path))
    assert not off.generated_token
    assert off.auth_summary() == "auth is off (local development)"
    assert auth_env(off.settings)["SCRIPTORIUM_AUTH"] == "off"
    given = Stack(
        CommonSettings(auth="required", jwt_secret=SecretStr(JWT_SECRET), data_dir=tmp_path)
    )
    assert not given.generated_token
    assert auth_env(given.settings)["SCRIPTORIUM_JWT_SECRET"] == JWT_SECRET


async def test_auth_a_local_stack_keeps_auth_on_with_its_own_token(
    stack_factory: StackFactory,
) -> None:
    """Real processes: the stack's generated token is required and accepted on every
    transport, and appears in no component's log."""
    stack = await asyncio.to_thread(stack_factory, ("critic",), auth="required")
    assert stack.generated_token
    assert stack.settings.token is not None
    token = stack.settings.token.get_secret_value()
    assert stack.token_file.read_text() == token
    url = stack.url_of("critic")
    card = await asyncio.to_thread(lambda: httpx.get(url + CARD_PATH, timeout=10).json())
    assert "bearer" in card["securitySchemes"]
    for transport in TRANSPORTS:
        with pytest.raises((A2AError, grpc.aio.AioRpcError, httpx.HTTPError)) as refused:
            await _whoami(url, transport, None, skill="critique")
        assert _refused(refused.value) == "401"
        async with http_client(request_timeout_s=30, headers=stack.settings.auth_headers()) as http:
            client = await open_client(url, http, transport=transport)
            # Past auth, the skill itself rejects this request: a task, not a 401.
            with pytest.raises(SkillFailed) as rejected:
                await call_skill(client, "critique", {"question": "q"})
            assert rejected.value.rejected, rejected.value
            await client.close()
    logs = "".join(p.read_text(errors="replace") for p in stack.log_dir.glob("*.log"))
    assert "Started server process" in logs  # the logs were read
    assert token not in logs
