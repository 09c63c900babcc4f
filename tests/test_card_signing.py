"""Signed agent cards: signing, verifying, interop with independent RFC 8785 + JWS code,
and admission by a real registry of a real agent (docs/a2a.md#signed-cards)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import rfc8785
from a2a.types import AgentCard, AgentExtension
from cryptography.hazmat.primitives import serialization
from google.protobuf.struct_pb2 import Struct
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey
from pydantic import SecretStr, ValidationError

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.peers import Peers, PeerUnavailable
from agents.scaffold.settings import AgentSettings
from protocol.cards import (
    CARD_PATH,
    CardSpec,
    Skill,
    build_agent_card,
    card_from_dict,
    card_to_dict,
)
from protocol.client import open_client
from protocol.http import running
from protocol.signing import (
    BAD_SIGNATURE,
    CARD_CHANGED,
    UNKNOWN_KEY,
    UNREADABLE,
    UNSIGNED,
    CardKey,
    CardSignatureError,
    CardTrustSettings,
    TrustedKeys,
    generate_signing_key,
    load_signing_key,
    sign_card,
    verify_card,
    write_key_pair,
)
from registry.api import create_app
from registry.directory import Registry
from registry.errors import InstanceConflict, UntrustedCard
from registry.keys import RedisKeys
from registry.records import AgentRecord, AgentState
from registry.settings import RegistrySettings
from scriptorium.testing import running_agent, wait_for


def new_key(kid: str | None = None) -> tuple[CardKey, dict[str, Any]]:
    """A fresh P-256 signing key and its public JWKS."""
    pem, jwks = generate_signing_key(kid)
    return load_signing_key(pem, kid=kid), jwks


@pytest.fixture(scope="module")
def key_pair() -> tuple[CardKey, dict[str, Any]]:
    return new_key("agents-2026")


@pytest.fixture(scope="module")
def other_pair() -> tuple[CardKey, dict[str, Any]]:
    return new_key("someone-else")


def plain_card(base: str = "http://127.0.0.1:9001", **spec: Any) -> AgentCard:
    return build_agent_card(
        CardSpec(
            name=spec.pop("name", "retriever"),
            description=spec.pop("description", "Finds passages."),
            skills=[Skill(id="search", name="Search", description="search", tags=["retrieval"])],
            **spec,
        ),
        base,
    )


def card_with_params(params: dict[str, Any], **spec: Any) -> AgentCard:
    struct = Struct()
    struct.update(params)
    extension = AgentExtension(uri="https://example.org/ext", params=struct)
    return plain_card(extra_extensions=[extension], **spec)


#: Cards on which canonicalisers have disagreed: non-ASCII text, escapes, ECMAScript number
#: formatting, UTF-16 key order (U+1D11E sorts before U+FFFF by code unit, after by code
#: point), and empty values that the SDK drops before canonicalising.
INTEROP_CARDS = {
    "plain": lambda: plain_card(),
    "unicode": lambda: plain_card(
        name="écrivain", description='Ünïcödé ✓ 𝄞 "quoted" \\ back\tslash \u2028 \u0007 </script>'
    ),
    "numbers": lambda: card_with_params(
        {"big": 1e21, "tenth": 0.1, "tiny": 1e-7, "neg": -0.0, "max": 2.0**53, "n": 8, "e": 1e-6}
    ),
    "key-order": lambda: card_with_params({"\uffff": 1, "𝄞": 2, "a": 3, "Z": 4, "é": 5}),
    "nested-empties": lambda: card_with_params(
        {
            "keep": {"zero": 0, "false": False},
            "gone": {},
            "none": [],
            "blank": "",
            "null": None,
            "deep": {"a": {"b": []}},
            "mixed": [1, "", {}, [], None, "x"],
        }
    ),
    "security-requirement": lambda: build_agent_card(
        CardSpec(
            name="writer",
            description="Writes.",
            skills=[Skill(id="write", name="Write", description="w", tags=["writing"])],
        ),
        "http://127.0.0.1:9003",
        require_token=True,
    ),
}


def drop_empty(value: Any) -> Any:
    """The SDK's rule, written independently: null, "", [] and {} go, recursively."""
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, drop_empty(v)) for k, v in value.items()) if v is not None}
        return kept or None
    if isinstance(value, list):
        items = [v for v in (drop_empty(v) for v in value) if v is not None]
        return items or None
    return None if value == "" else value


def independent_payload(wire: dict[str, Any], *, clean: bool = True) -> bytes:
    """RFC 8785 bytes of a card as it travels (JSON), by the `rfc8785` package."""
    body = {k: v for k, v in wire.items() if k != "signatures"}
    return rfc8785.dumps(drop_empty(body) if clean else body)


def wire_of(card: AgentCard) -> dict[str, Any]:
    """The card as a client receives it: through JSON text."""
    wire: dict[str, Any] = json.loads(json.dumps(card_to_dict(card), ensure_ascii=False))
    return wire


def key_pem(key: CardKey) -> str:
    private: Any = key.jwk.key
    return str(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def joserfc_key(jwks: dict[str, Any]) -> ECKey:
    return ECKey.import_key(jwks["keys"][0])


# -- unit: sign and verify ---------------------------------------------------------------------


def test_auth_signed_card_verifies_through_json_and_names_its_key(
    key_pair: tuple[CardKey, dict[str, Any]],
) -> None:
    key, jwks = key_pair
    signed = sign_card(plain_card(), key)
    assert len(signed.signatures) == 1
    received = card_from_dict(wire_of(signed))
    verified = verify_card(received, TrustedKeys.from_jwks(json.dumps(jwks)))
    assert (verified.kid, verified.thumbprint) == ("agents-2026", key.thumbprint)
    assert joserfc_key(jwks).thumbprint() == key.thumbprint  # RFC 7638, independently
    # Signing again replaces the signature (it covers the card without signatures).
    assert len(sign_card(signed, key).signatures) == 1


def test_auth_keys_load_from_pem_jwk_and_files(tmp_path: Path) -> None:
    pem, jwks = generate_signing_key()
    from_pem = load_signing_key(pem)
    assert from_pem.kid == from_pem.thumbprint  # default kid: the RFC 7638 thumbprint
    private_jwk = {**from_pem.jwk._jwk_data, "kid": "k1"}
    assert load_signing_key(json.dumps(private_jwk)).kid == "k1"
    private, public = write_key_pair(tmp_path / "keys")  # python -m protocol.signing DIR
    assert private.stat().st_mode & 0o777 == 0o600
    settings = AgentSettings(
        card_signing_key_file=private,
        card_signing_kid="renamed",
        trusted_card_keys_file=public,
        trusted_card_keys=json.dumps(jwks),
    )
    signing = settings.signing_key()
    assert signing is not None
    assert signing.kid == "renamed"
    trusted = settings.trusted_keys()
    assert trusted is not None
    assert set(trusted.by_kid) == {from_pem.thumbprint, signing.thumbprint}
    # Renamed on one side only, a kid no longer names the key; as written, it does.
    with pytest.raises(CardSignatureError, match="unknown key id 'renamed'"):
        verify_card(sign_card(plain_card(), signing), trusted)
    as_written = load_signing_key(private.read_text())
    assert verify_card(sign_card(plain_card(), as_written), trusted).kid == as_written.kid
    assert AgentSettings(card_signing_key=SecretStr(pem)).signing_key() is not None
    assert AgentSettings().signing_key() is None
    assert AgentSettings().trusted_keys() is None
    # Secret material never shows in reprs or dumps.
    assert "PRIVATE" not in repr(AgentSettings(card_signing_key=SecretStr(pem)))
    with pytest.raises(ValueError, match="public key"):
        load_signing_key(json.dumps(jwks["keys"][0]))
    with pytest.raises(ValueError, match="oct"):
        TrustedKeys.from_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})


def test_auth_requiring_signed_cards_needs_trusted_keys() -> None:
    with pytest.raises(ValidationError, match="SCRIPTORIUM_TRUSTED_CARD_KEYS"):
        RegistrySettings(require_signed_cards=True)
    _, jwks = generate_signing_key()
    settings = CardTrustSettings(require_signed_cards=True, trusted_card_keys=json.dumps(jwks))
    assert settings.trusted_keys() is not None


def test_auth_each_failure_has_its_reason(
    key_pair: tuple[CardKey, dict[str, Any]], other_pair: tuple[CardKey, dict[str, Any]]
) -> None:
    key, jwks = key_pair
    trusted = TrustedKeys.from_jwks(jwks)

    def reason(card: AgentCard) -> tuple[str, str]:
        with pytest.raises(CardSignatureError) as caught:
            verify_card(card, trusted)
        return caught.value.reason, str(caught.value)

    assert reason(plain_card())[0] == UNSIGNED

    changed = sign_card(plain_card(), key)
    changed.description = "Finds passages, and your passwords."
    kind, message = reason(changed)
    assert kind == CARD_CHANGED
    assert "changed after signing" in message
    assert "To fix" in message

    forged = sign_card(plain_card(), key)
    signature = forged.signatures[0].signature
    forged.signatures[0].signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert reason(forged)[0] == BAD_SIGNATURE

    kind, message = reason(sign_card(plain_card(), other_pair[0]))
    assert kind == UNKNOWN_KEY
    assert "'someone-else'" in message
    assert "agents-2026" in message

    garbled = sign_card(plain_card(), key)
    garbled.signatures[0].protected = "not-base64-json!"
    assert reason(garbled)[0] == UNREADABLE

    # A jku in the header is never fetched: an unknown kid stays unknown.
    with_jku = plain_card()
    header = {"alg": "ES256", "kid": "elsewhere", "jku": "http://169.254.169.254/keys"}
    protected = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
    with_jku.signatures.add(protected=protected, signature="AAAA")
    assert reason(with_jku)[0] == UNKNOWN_KEY

    # A kid that is a trusted key's thumbprint names that key (an agent given only a PEM).
    by_thumbprint = sign_card(plain_card(), load_signing_key(key_pem(key)))
    assert verify_card(by_thumbprint, trusted).kid == "agents-2026"

    # One good signature among bad ones is enough.
    both = sign_card(plain_card(), key)
    both.signatures.insert(0, sign_card(plain_card(), other_pair[0]).signatures[0])
    assert verify_card(both, trusted).kid == "agents-2026"


# -- interop: independent RFC 8785 (rfc8785) + JWS (joserfc) ------------------------------------


@pytest.mark.parametrize("case", sorted(INTEROP_CARDS))
def test_auth_our_signature_verifies_with_independent_jcs_and_jws(
    case: str, key_pair: tuple[CardKey, dict[str, Any]]
) -> None:
    key, jwks = key_pair
    wire = wire_of(sign_card(INTEROP_CARDS[case](), key))
    payload = independent_payload(wire)
    signature = wire["signatures"][0]
    compact = f"{signature['protected']}..{signature['signature']}"  # detached payload
    verified = jws.deserialize_compact(
        compact, joserfc_key(jwks), algorithms=["ES256"], payload=payload
    )
    assert verified.headers()["kid"] == "agents-2026"
    assert json.loads(verified.payload)["name"] == wire["name"]


@pytest.mark.parametrize("case", sorted(INTEROP_CARDS))
def test_auth_independent_signature_verifies_with_ours(
    case: str, key_pair: tuple[CardKey, dict[str, Any]]
) -> None:
    _, jwks = key_pair
    private = ECKey.generate_key("P-256", parameters={"kid": "independent"})
    wire = wire_of(INTEROP_CARDS[case]())
    compact = jws.serialize_compact(
        {"alg": "ES256", "kid": "independent", "typ": "JOSE"}, independent_payload(wire), private
    )
    protected, _, signature = compact.split(".")
    wire["signatures"] = [{"protected": protected, "signature": signature}]
    trusted = TrustedKeys.from_jwks({"keys": [*jwks["keys"], private.as_dict(private=False)]})
    assert verify_card(card_from_dict(wire), trusted).kid == "independent"
    # Without our digest header a change is still caught, as a bad signature.
    wire["description"] = "changed"
    with pytest.raises(CardSignatureError) as caught:
        verify_card(card_from_dict(wire), trusted)
    assert caught.value.reason == BAD_SIGNATURE


def test_auth_empty_values_are_dropped_before_canonicalising(
    key_pair: tuple[CardKey, dict[str, Any]],
) -> None:
    """What an independent verifier must know: the SDK signs the card minus empty values."""
    key, jwks = key_pair
    for case in ("nested-empties", "security-requirement"):
        wire = wire_of(sign_card(INTEROP_CARDS[case](), key))
        signature = wire["signatures"][0]
        compact = f"{signature['protected']}..{signature['signature']}"
        # Canonicalising the card as served, empties included, gives other bytes: no match.
        with pytest.raises(BadSignatureError):
            jws.deserialize_compact(
                compact,
                joserfc_key(jwks),
                algorithms=["ES256"],
                payload=independent_payload(wire, clean=False),
            )
    # The consequence: a value made only of empties is outside the signature. A card's
    # security requirement ({"bearer": {}}: bearer, no scopes) can be removed unnoticed.
    signed = sign_card(INTEROP_CARDS["security-requirement"](), key)
    assert card_to_dict(signed)["securityRequirements"] == [{"schemes": {"bearer": {}}}]
    del signed.security_requirements[:]
    assert verify_card(signed, TrustedKeys.from_jwks(jwks)).kid == "agents-2026"


def test_auth_numbers_outside_the_exact_double_range_cannot_be_signed_alike() -> None:
    """Extension params are protobuf doubles: an integer beyond 2^53 is rounded on the way
    in, so its signed form differs from the JSON that was sent; rfc8785 refuses it."""
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps({"n": 2**53 + 1})
    card = card_from_dict(
        {
            **wire_of(card_with_params({})),
            "capabilities": {
                "extensions": [{"uri": "https://example.org/ext", "params": {"n": 2**53 + 1}}]
            },
        }
    )
    assert card_to_dict(card)["capabilities"]["extensions"][0]["params"]["n"] == 2.0**53


# -- a real registry and a real agent ------------------------------------------------------------


async def noop(call: SkillCall) -> None:
    del call


SIGNED = AgentParts(
    card=CardSpec(
        name="signer",
        description="An agent with a signed card.",
        skills=[Skill(id="echo", name="Echo", description="echo", tags=["test"])],
    ),
    handlers={"echo": noop},
)


@pytest.fixture
def trust(
    key_pair: tuple[CardKey, dict[str, Any]], redis_url: str, redis_prefix: str
) -> RegistrySettings:
    return RegistrySettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        heartbeat_interval_s=0.2,
        heartbeat_ttl_s=1.0,
        connect_timeout_s=1,
        card_fetch_timeout_s=2,
        trusted_card_keys=json.dumps(key_pair[1]),
        require_signed_cards=True,
    )


@pytest.fixture
async def registry_http(
    trust: RegistrySettings, redis: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running(create_app(trust, redis=redis)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield http


async def test_auth_signed_agent_registers_when_signing_is_required(
    agent_settings: AgentSettings,
    trust: RegistrySettings,
    redis: aioredis.Redis,
    redis_prefix: str,
) -> None:
    pem, jwks = generate_signing_key("fleet")
    key = load_signing_key(pem)
    trusted = json.dumps(jwks)
    # The agent registers itself with the same admission rules (its settings require too).
    settings = agent_settings.model_copy(
        update={
            "card_signing_key": SecretStr(pem),
            "card_signing_kid": "fleet",
            "trusted_card_keys": trusted,
            "require_signed_cards": True,
        }
    )
    strict = trust.model_copy(update={"trusted_card_keys": trusted})
    async with (
        running(create_app(strict, redis=redis)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        running_agent(SIGNED, settings) as agent_url,
    ):
        served = (await http.get(agent_url + CARD_PATH)).json()
        header = base64.urlsafe_b64decode(served["signatures"][0]["protected"] + "==")
        assert json.loads(header)["kid"] == "fleet"

        async def listed() -> bool:
            return bool((await http.get("/agents", params={"skill": "echo"})).json())

        await wait_for(listed, 10, "the signed agent registered itself")
        (record,) = (await http.get("/agents", params={"skill": "echo"})).json()
        binding = await redis.hget(RedisKeys(redis_prefix).agent(record["id"]), "binding")
        assert binding == f"{agent_url}#key={key.thumbprint}".encode()

        # Through the API as well: the registry fetches the served card and checks it.
        again = await http.post("/agents", json=served, params={"instance_id": record["id"]})
        assert again.status_code == 201, again.text


async def test_auth_unsigned_or_tampered_cards_are_refused_with_the_reason(
    agent_settings: AgentSettings,
    key_pair: tuple[CardKey, dict[str, Any]],
    other_pair: tuple[CardKey, dict[str, Any]],
    registry_http: httpx.AsyncClient,
    redis: aioredis.Redis,
    redis_prefix: str,
) -> None:
    async with running_agent(SIGNED, agent_settings) as agent_url:  # signs nothing
        unsigned = (await registry_http.get(agent_url + CARD_PATH)).json()
        assert "signatures" not in unsigned
        refused = await registry_http.post("/agents", json=unsigned)
        assert refused.status_code == 403
        assert "(unsigned)" in refused.json()["detail"]
        assert "SCRIPTORIUM_CARD_SIGNING_KEY" in refused.json()["detail"]

    # A card as an agent signed it, then changed on the way, is refused before any fetch.
    wire = wire_of(sign_card(plain_card(), key_pair[0]))
    wire["description"] = "Now also forwards your questions elsewhere."
    tampered = await registry_http.post("/agents", json=wire)
    assert tampered.status_code == 403
    assert "(card_changed)" in tampered.json()["detail"]

    stranger = await registry_http.post(
        "/agents", json=wire_of(sign_card(plain_card(), other_pair[0]))
    )
    assert stranger.status_code == 403
    assert "(unknown_key)" in stranger.json()["detail"]
    assert "'someone-else'" in stranger.json()["detail"]
    assert [k async for k in redis.scan_iter(match=f"{redis_prefix}:agent:*")] == []


async def test_auth_reregistration_signed_by_another_key_is_refused_409(
    key_pair: tuple[CardKey, dict[str, Any]],
    other_pair: tuple[CardKey, dict[str, Any]],
    trust: RegistrySettings,
    redis: aioredis.Redis,
) -> None:
    both = {"keys": [*key_pair[1]["keys"], *other_pair[1]["keys"]]}
    lenient = trust.model_copy(
        update={"trusted_card_keys": json.dumps(both), "require_signed_cards": False}
    )
    registry = Registry(redis, lenient)
    card = plain_card()
    await registry.register(sign_card(card, key_pair[0]), instance_id="r-1", verify=False)
    # The same key again (a restart) is the same instance.
    await registry.register(sign_card(card, key_pair[0]), instance_id="r-1", verify=False)
    with pytest.raises(InstanceConflict, match="#key="):
        await registry.register(sign_card(card, other_pair[0]), instance_id="r-1", verify=False)
    with pytest.raises(InstanceConflict):  # unsigned, at the same address
        await registry.register(card, instance_id="r-1", verify=False)
    # Not required: unsigned cards and unknown keys are admitted, bound to the URL only;
    # a trusted key's signature that does not verify is refused all the same.
    await registry.register(card, instance_id="r-2", verify=False)
    changed = sign_card(card, key_pair[0])
    changed.version = "9.9.9"
    with pytest.raises(UntrustedCard, match="card_changed"):
        await registry.register(changed, instance_id="r-3", verify=False)


async def test_auth_clients_verify_a_card_before_trusting_it(
    key_pair: tuple[CardKey, dict[str, Any]],
) -> None:
    trusted = TrustedKeys.from_jwks(key_pair[1])
    async with httpx.AsyncClient() as http:
        client = await open_client(sign_card(plain_card(), key_pair[0]), http, trusted_keys=trusted)
        await client.close()
        with pytest.raises(CardSignatureError) as caught:
            await open_client(plain_card(), http, trusted_keys=trusted)
        assert caught.value.reason == UNSIGNED
        # Without trusted keys configured nothing is checked (the default path).
        client = await open_client(plain_card(), http)
        await client.close()


async def test_auth_peers_refuse_a_peer_whose_card_is_not_trusted(
    key_pair: tuple[CardKey, dict[str, Any]], redis: aioredis.Redis, trust: RegistrySettings
) -> None:
    def record(card: AgentCard) -> AgentRecord:
        return AgentRecord(
            id="retriever-1",
            name=card.name,
            url="http://127.0.0.1:9001",
            skills=["search"],
            tags=["retrieval"],
            capacity=2,
            leased=0,
            load=0,
            state=AgentState.HEALTHY,
            registered_at=0,
            last_seen=0,
            card_json=json.dumps(card_to_dict(card)),
        )

    async with httpx.AsyncClient() as http:
        peers = Peers(
            Registry(redis, trust),
            http,
            caller="test",
            trusted_keys=TrustedKeys.from_jwks(key_pair[1]),
        )
        with pytest.raises(PeerUnavailable, match=r"'retriever-1' is not trusted.*no signature"):
            await peers.client(record(plain_card()))
        client = await peers.client(record(sign_card(plain_card(), key_pair[0])))
        await client.close()
