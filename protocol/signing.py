"""Signed agent cards: each agent signs its card, registries and clients verify it.

A signature is the card's ``signatures`` entry made by a2a-sdk's signer
(:func:`a2a.utils.signing.create_agent_card_signer`): a JWS (RFC 7515) whose payload is the
card's RFC 8785 (JCS) canonical form, detached. The canonical form is the SDK's: the card as
protobuf JSON (``MessageToDict``), ``signatures`` removed, then **every null, empty string,
empty list and empty object dropped, recursively** (a list or object that only held such
values is empty and goes too), then JCS. An independent verifier must apply the same rule
before canonicalising, or any card holding an empty value (a security requirement with no
scopes, ``{"bearer": {}}``; an extension's empty ``params``) does not verify
(docs/a2a.md#signed-cards).

The protected header carries only ``alg``, ``kid`` and ``typ: JOSE``: strict JWS libraries
(joserfc, by default) refuse protected parameters they do not know. The signature's
*unprotected* header carries ``card_sha256``, the SHA-256 (base64url) of the canonical form
that was signed, so that a signature that does not verify can be told apart as "the card
changed after signing" (digest differs) or "bad signature" (digest matches). It is only a
hint for the message: nothing signs it, and a card is refused either way. Keys: EC P-256
(ES256, the default), P-384 (ES384), Ed25519 (EdDSA) or RSA (RS256); never a shared secret.
A key id (``kid``) names the key; by default it is the key's RFC 7638 thumbprint. A ``jku``
in a header is never fetched: only configured keys are trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from a2a.types import AgentCard, AgentCardSignature
from a2a.utils._jcs import CanonicalizationError
from a2a.utils.signing import (
    ProtectedHeader,
    SignatureVerificationError,
    _canonicalize_agent_card,
    create_agent_card_signer,
    create_signature_verifier,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWKError
from pydantic import Field, SecretStr, model_validator

from protocol.settings import CommonSettings

#: Unprotected header parameter: SHA-256 (base64url) of the canonical card that was signed.
DIGEST_HEADER = "card_sha256"
#: What :class:`CardSignatureError.reason` may be.
UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, CARD_CHANGED, UNREADABLE = (
    "unsigned",
    "unknown_key",
    "bad_signature",
    "card_changed",
    "unreadable",
)
#: What to do about each reason (appended to the error's message).
HINTS = {
    UNSIGNED: "give the agent a signing key (SCRIPTORIUM_CARD_SIGNING_KEY or _FILE) whose "
    "public key is among the verifier's SCRIPTORIUM_TRUSTED_CARD_KEYS",
    UNKNOWN_KEY: "add the agent's public key to SCRIPTORIUM_TRUSTED_CARD_KEYS (or _FILE), "
    "or sign with a key that is there",
    CARD_CHANGED: "use the card exactly as the agent signed and serves it (an agent signs "
    "again when it starts)",
    BAD_SIGNATURE: "the signature was not made by the key its kid names: check the agent's "
    "SCRIPTORIUM_CARD_SIGNING_KEY and SCRIPTORIUM_CARD_SIGNING_KID",
    UNREADABLE: "sign the card again with a2a-sdk's signer (protocol.signing.sign_card)",
}
_PRIORITY = (CARD_CHANGED, BAD_SIGNATURE, UNREADABLE, UNKNOWN_KEY, UNSIGNED)
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384"}


class CardSignatureError(ValueError):
    """A card whose signature cannot be trusted; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class CardKeyError(ValueError):
    """A key that cannot be used for card signatures; the message says why."""


@dataclass(frozen=True)
class CardKey:
    """One key: its id, algorithm, RFC 7638 thumbprint and the key itself (PyJWT form)."""

    kid: str
    alg: str
    thumbprint: str
    jwk: PyJWK
    public_jwk: dict[str, str]


# -- keys -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a JWK's public members."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(m not in jwk for m in members):
        raise CardKeyError(f"unsupported or incomplete JWK (kty {jwk.get('kty')!r})")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _public_jwk(key: Any) -> tuple[dict[str, str], str]:
    """The public JWK and algorithm of a cryptography key (private or public)."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = cast(dict[str, str], ECAlgorithm.to_jwk(public, as_dict=True))
        alg = _EC_ALGS.get(jwk.get("crv", ""))
        if alg is None:
            raise CardKeyError(f"EC curve {jwk.get('crv')!r} is not supported: use P-256 or P-384")
        return jwk, alg
    if isinstance(public, ed25519.Ed25519PublicKey):
        return cast(dict[str, str], OKPAlgorithm.to_jwk(public, as_dict=True)), "EdDSA"
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CardKeyError("RSA keys must have at least 2048 bits")
        return cast(dict[str, str], RSAAlgorithm.to_jwk(public, as_dict=True)), "RS256"
    raise CardKeyError(
        f"unsupported key type {type(public).__name__}: use EC P-256, Ed25519 or RSA"
    )


def _card_key(crypto_key: Any, kid: str | None, declared_alg: str | None) -> CardKey:
    public_jwk, alg = _public_jwk(crypto_key)
    if declared_alg is not None and declared_alg != alg:
        raise CardKeyError(
            f"the key declares alg {declared_alg!r}, but a key of its type uses {alg}"
        )
    thumbprint = jwk_thumbprint(public_jwk)
    kid = kid or thumbprint
    return CardKey(
        kid=kid,
        alg=alg,
        thumbprint=thumbprint,
        jwk=PyJWK.from_dict({**_jwk_of(crypto_key), "kid": kid}, algorithm=alg),
        public_jwk={**public_jwk, "kid": kid, "alg": alg, "use": "sig"},
    )


def _jwk_of(crypto_key: Any) -> dict[str, Any]:
    for algorithm in (ECAlgorithm, OKPAlgorithm, RSAAlgorithm):
        try:
            return algorithm.to_jwk(crypto_key, as_dict=True)
        except (TypeError, ValueError, PyJWKError):
            continue
    raise CardKeyError(f"unsupported key type {type(crypto_key).__name__}")


def _from_jwk(jwk: Any) -> Any:
    """A cryptography key from a JWK dict (private or public)."""
    if not isinstance(jwk, dict):
        raise CardKeyError("a JWK must be a JSON object")
    if jwk.get("kty") == "oct":
        raise CardKeyError("shared-secret (oct) keys are refused: card signatures need key pairs")
    try:
        return PyJWK.from_dict(jwk).key
    except (PyJWKError, ValueError, TypeError, KeyError) as exc:
        raise CardKeyError(f"unusable JWK (kid {jwk.get('kid')!r}): {exc}") from exc


def load_signing_key(material: str, *, kid: str | None = None) -> CardKey:
    """An agent's private signing key from PEM (PKCS#8 or traditional) or JWK JSON text.

    ``kid`` overrides the JWK's own ``kid``; without either it is the key's thumbprint.
    """
    text = material.strip()
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardKeyError(f"the signing key is neither PEM nor JWK JSON: {exc}") from exc
        key = _from_jwk(jwk)
        kid, alg = kid or jwk.get("kid"), jwk.get("alg")
    else:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise CardKeyError(
                "the signing key is neither a PEM private key (unencrypted) nor JWK JSON"
            ) from exc
        alg = None
    if not hasattr(key, "private_bytes"):
        raise CardKeyError("the signing key is a public key: give the private key")
    return _card_key(key, kid, alg)


class TrustedKeys:
    """Public keys whose card signatures are trusted, by key id."""

    def __init__(self, keys: list[CardKey]) -> None:
        self.by_kid: dict[str, CardKey] = {}
        for key in keys:
            if key.kid in self.by_kid:
                raise CardKeyError(f"key id {key.kid!r} appears twice among the trusted keys")
            self.by_kid[key.kid] = key

    @classmethod
    def from_jwks(cls, jwks: str | dict[str, Any]) -> TrustedKeys:
        """From a JWKS (``{"keys": [...]}``) or a single JWK, as JSON text or parsed."""
        if isinstance(jwks, str):
            try:
                jwks = json.loads(jwks)
            except json.JSONDecodeError as exc:
                raise CardKeyError(f"trusted card keys are not JSON: {exc}") from exc
        if not isinstance(jwks, dict):
            raise CardKeyError('trusted card keys must be a JWKS {"keys": [...]} or one JWK')
        entries = jwks.get("keys", [jwks])
        if not isinstance(entries, list):
            raise CardKeyError('"keys" of the trusted JWKS must be a list')
        keys = []
        for jwk in entries:
            crypto_key = _from_jwk(jwk)
            if hasattr(crypto_key, "private_bytes"):  # take only what is public
                crypto_key = crypto_key.public_key()
            keys.append(_card_key(crypto_key, jwk.get("kid"), jwk.get("alg")))
        return cls(keys)

    def find(self, kid: str) -> CardKey | None:
        """The key with this id; else the key whose thumbprint it is (an agent given only a
        PEM signs with its thumbprint as kid, whatever name the JWKS gives the key)."""
        found = self.by_kid.get(kid)
        if found is None:
            found = next((k for k in self.by_kid.values() if k.thumbprint == kid), None)
        return found

    def __len__(self) -> int:
        return len(self.by_kid)

    def jwks(self) -> dict[str, Any]:
        """The keys as a public JWKS."""
        return {"keys": [k.public_jwk for k in self.by_kid.values()]}


def generate_signing_key(kid: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new P-256 key pair: the private key as PEM (PKCS#8) and the public JWKS."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, {"keys": [_card_key(private, kid, None).public_jwk]}


# -- signing and verifying ------------------------------------------------------------------


def card_digest(card: AgentCard) -> str:
    """SHA-256 (base64url) of the card's canonical form (what a signature covers)."""
    return _b64(hashlib.sha256(_canonicalize_agent_card(card).encode()).digest())


def sign_card(card: AgentCard, key: CardKey) -> AgentCard:
    """A copy of ``card`` carrying one signature by ``key`` (earlier signatures dropped)."""
    signed = AgentCard()
    signed.CopyFrom(card)
    del signed.signatures[:]
    protected = {"alg": key.alg, "kid": key.kid, "typ": "JOSE"}
    note = {DIGEST_HEADER: card_digest(signed)}  # unprotected: a hint, see the module doc
    return create_agent_card_signer(key.jwk, cast(ProtectedHeader, protected), note)(signed)


def verify_card(card: AgentCard, trusted: TrustedKeys) -> CardKey:
    """The trusted key whose signature on ``card`` verifies.

    Raises :class:`CardSignatureError` naming what failed: no signature, an unknown key id,
    a card changed after signing, a bad signature, an unreadable signature.
    """
    if not card.signatures:
        raise CardSignatureError(UNSIGNED, f"the card has no signature: {HINTS[UNSIGNED]}")
    try:
        digest = card_digest(card)
    except CanonicalizationError as exc:
        raise CardSignatureError(
            UNREADABLE, f"the card has no RFC 8785 canonical form ({exc}); fix the card"
        ) from exc
    failures: list[tuple[str, str]] = []
    for index, signature in enumerate(card.signatures):
        header = _protected_header(signature.protected)
        if header is None:
            failures.append((UNREADABLE, f"signature {index}: protected header is not JSON"))
            continue
        kid = header.get("kid")
        key = trusted.find(kid) if isinstance(kid, str) else None
        if key is None:
            failures.append((UNKNOWN_KEY, f"signature {index}: unknown key id {kid!r}"))
            continue
        where = f"signature {index} (key {kid!r})"
        if header.get("alg") != key.alg:
            failures.append((BAD_SIGNATURE, f"{where}: alg {header.get('alg')!r}, not {key.alg}"))
        elif _verifies(card, signature, key):
            return key
        elif signature.header.fields.get(DIGEST_HEADER, None) is not None and (
            signature.header[DIGEST_HEADER] != digest
        ):
            failures.append((CARD_CHANGED, f"{where}: the card changed after signing"))
        else:
            failures.append((BAD_SIGNATURE, f"{where}: the signature does not verify"))
    reason = min(failures, key=lambda f: _PRIORITY.index(f[0]))[0]
    known = ", ".join(sorted(trusted.by_kid)) or "none configured"
    raise CardSignatureError(
        reason,
        "no valid signature: "
        + "; ".join(m for _, m in failures)
        + f" (trusted keys: {known}). To fix: {HINTS[reason]}",
    )


def _verifies(card: AgentCard, signature: AgentCardSignature, key: CardKey) -> bool:
    """Whether ``signature`` on ``card`` verifies with ``key`` (a2a-sdk's verifier)."""
    one = AgentCard()
    one.CopyFrom(card)
    del one.signatures[:]
    one.signatures.append(signature)

    def key_of(kid: str | None, jku: str | None) -> PyJWK:
        del kid, jku  # the caller matched the kid; a jku is never fetched
        return key.jwk

    try:
        create_signature_verifier(key_of, [key.alg])(one)
    except SignatureVerificationError:
        return False
    return True


def _protected_header(protected: str) -> dict[str, Any] | None:
    try:
        padded = protected + "=" * (-len(protected) % 4)
        header = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


# -- settings -------------------------------------------------------------------------------


class CardTrustSettings(CommonSettings):
    """Which card signatures a registry or client trusts (prefix ``SCRIPTORIUM_``)."""

    trusted_card_keys: str | None = Field(
        default=None, description="Public keys trusted for card signatures: JWKS (or JWK) JSON."
    )
    trusted_card_keys_file: Path | None = Field(
        default=None, description="A JWKS file of public keys trusted for card signatures."
    )
    require_signed_cards: bool = Field(
        default=False,
        description="Refuse to register cards without a valid signature by a trusted key.",
    )

    @model_validator(mode="after")
    def _keys_when_required(self) -> CardTrustSettings:
        if self.require_signed_cards and not (
            self.trusted_card_keys or self.trusted_card_keys_file
        ):
            raise ValueError(
                "require_signed_cards needs trusted keys: set SCRIPTORIUM_TRUSTED_CARD_KEYS "
                "(JWKS JSON) or SCRIPTORIUM_TRUSTED_CARD_KEYS_FILE"
            )
        return self

    def trusted_keys(self) -> TrustedKeys | None:
        """The configured trusted keys (inline and file together), or None when there are none."""
        keys: list[CardKey] = []
        if self.trusted_card_keys:
            keys += TrustedKeys.from_jwks(self.trusted_card_keys).by_kid.values()
        if self.trusted_card_keys_file is not None:
            keys += TrustedKeys.from_jwks(self.trusted_card_keys_file.read_text()).by_kid.values()
        return TrustedKeys(keys) if keys else None


class CardSigningSettings(CardTrustSettings):
    """An agent's card signing key, on top of what it trusts."""

    card_signing_key: SecretStr | None = Field(
        default=None, description="Private key signing this agent's card: PEM or JWK JSON."
    )
    card_signing_key_file: Path | None = Field(
        default=None, description="A file holding the card signing key (PEM or JWK JSON)."
    )
    card_signing_kid: str | None = Field(
        default=None, description="Key id put in signatures (default: JWK kid, else thumbprint)."
    )

    def signing_key(self) -> CardKey | None:
        """The configured signing key, or None when cards go unsigned."""
        if self.card_signing_key is not None:
            material = self.card_signing_key.get_secret_value()
        elif self.card_signing_key_file is not None:
            material = self.card_signing_key_file.read_text()
        else:
            return None
        return load_signing_key(material, kid=self.card_signing_kid)


def write_key_pair(directory: Path, kid: str | None = None) -> tuple[Path, Path]:
    """Write a new signing key (``card-signing-key.pem``, owner-only) and its public JWKS
    (``trusted-card-keys.json``) into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    pem, jwks = generate_signing_key(kid)
    private, public = directory / "card-signing-key.pem", directory / "trusted-card-keys.json"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pem)
    public.write_text(json.dumps(jwks, indent=2) + "\n")
    return private, public


if __name__ == "__main__":  # python -m protocol.signing DIR [KID]
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m protocol.signing DIR [KID]  (writes a P-256 key pair)")
    paths = write_key_pair(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else None)
    print(f"SCRIPTORIUM_CARD_SIGNING_KEY_FILE={paths[0]}")
    print(f"SCRIPTORIUM_TRUSTED_CARD_KEYS_FILE={paths[1]}")
