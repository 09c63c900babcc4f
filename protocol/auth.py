"""Who is calling: bearer credentials (static API keys, JWTs) checked the same way everywhere.

Every agent (JSON-RPC, HTTP+JSON, gRPC) and the registry's writes and streams accept
``Authorization: Bearer <credential>``, where the credential is one of:

* a static key: ``SCRIPTORIUM_TOKEN`` (subject ``scriptorium``, an operator) or one of
  ``SCRIPTORIUM_API_KEYS`` (``subject=key,subject=key``);
* a JWT (``sub`` and ``exp`` required) signed with ``SCRIPTORIUM_JWT_SECRET`` (HS256) or by a
  key of the JWKS at ``SCRIPTORIUM_JWKS_URL`` (``https://...`` or ``file:///path``; RS256/ES256).

A caller's roles are the JWT's ``roles`` claim, plus ``operator`` for the static token and for
subjects listed in ``SCRIPTORIUM_OPERATORS``. Operator-only skills (the retriever's ``ingest``)
answer 403 / PERMISSION_DENIED to everyone else.

``SCRIPTORIUM_AUTH=required`` (the default) with no credential configured refuses to start
(:func:`check_configured`); ``SCRIPTORIUM_AUTH=off`` with none configured turns every check
off, for local development only (a credential that is configured is always enforced).
Secrets are ``SecretStr`` and never logged.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import jwt
from starlette.authentication import BaseUser

if TYPE_CHECKING:
    from protocol.settings import CommonSettings

#: The role that may call operator-only skills.
OPERATOR = "operator"
#: Subject of the static ``SCRIPTORIUM_TOKEN``.
TOKEN_SUBJECT = "scriptorium"  # noqa: S105 (a subject, not a secret)
#: Lifetime of the JWTs a process mints for its own calls.
MINTED_TTL_S = 3600.0
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
AUTH_SETTINGS = (
    "SCRIPTORIUM_TOKEN",
    "SCRIPTORIUM_API_KEYS",
    "SCRIPTORIUM_JWT_SECRET",
    "SCRIPTORIUM_JWKS_URL",
)
WHAT_TO_SEND = (
    "send Authorization: Bearer <credential>: a key from SCRIPTORIUM_TOKEN or "
    "SCRIPTORIUM_API_KEYS, or a JWT (sub, exp) signed with SCRIPTORIUM_JWT_SECRET or a "
    "SCRIPTORIUM_JWKS_URL key"
)


class AuthConfigError(RuntimeError):
    """Authentication is required but nothing to check credentials against is configured."""


class AuthError(Exception):
    """A request refused: ``status`` 401 (no or invalid credential) or 403 (not allowed)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class Principal(BaseUser):
    """An authenticated caller: its subject, roles and how it proved who it is."""

    def __init__(self, subject: str, roles: frozenset[str], method: str) -> None:
        self.subject = subject
        self.roles = roles
        self.method = method  # "key" or "jwt"

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.subject

    @property
    def identity(self) -> str:
        return self.subject

    def __repr__(self) -> str:
        return f"Principal({self.subject!r}, roles={sorted(self.roles)}, via {self.method})"


def check_configured(settings: CommonSettings) -> None:
    """Refuse to start with auth required and nothing to check credentials against."""
    if settings.auth == "off" or configured(settings):
        return
    raise AuthConfigError(
        "authentication is required (SCRIPTORIUM_AUTH=required) but no credential is "
        f"configured: set one of {', '.join(AUTH_SETTINGS)}, or SCRIPTORIUM_AUTH=off for "
        "local development only"
    )


def enforced(settings: CommonSettings) -> bool:
    """Whether callers must authenticate: unless ``SCRIPTORIUM_AUTH=off`` *and* no credential
    is configured (off never ignores a configured credential: it fails closed)."""
    return settings.auth == "required" or configured(settings)


def configured(settings: CommonSettings) -> bool:
    """Whether any credential to check callers against is configured."""
    return any(
        value is not None
        for value in (settings.token, settings.api_keys, settings.jwt_secret, settings.jwks_url)
    )


def parse_api_keys(text: str) -> dict[str, str]:
    """``subject=key,subject=key`` as {key: subject}; raises ValueError naming the bad entry
    (by position, never by its key)."""
    keys: dict[str, str] = {}
    for position, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        subject, sep, key = entry.partition("=")
        if not sep or not subject.strip() or not key.strip():
            raise ValueError(
                f"SCRIPTORIUM_API_KEYS entry {position} is not subject=key (entries are "
                "comma-separated)"
            )
        keys[key.strip()] = subject.strip()
    return keys


@dataclass(frozen=True)
class _JwksFile:
    """A JWKS read from a local file (``file://``), read again when it changes."""

    path: Path

    def key_for(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        keys = jwt.PyJWKSet.from_dict(json.loads(self.path.read_text())).keys
        for key in keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the JWKS")


class Authenticator:
    """Checks bearer credentials against the configured keys, secret and JWKS."""

    def __init__(self, settings: CommonSettings) -> None:
        self._keys: dict[bytes, str] = {}
        if settings.token is not None:
            self._keys[settings.token.get_secret_value().encode()] = TOKEN_SUBJECT
        if settings.api_keys is not None:
            for key, subject in parse_api_keys(settings.api_keys.get_secret_value()).items():
                self._keys[key.encode()] = subject
        self._secret = settings.jwt_secret
        self._audience = settings.jwt_audience
        self._operators = settings.operator_subjects
        self._jwks: _JwksFile | jwt.PyJWKClient | None = None
        if settings.jwks_url:
            parts = urlsplit(settings.jwks_url)
            self._jwks = (
                _JwksFile(Path(unquote(parts.path)))
                if parts.scheme == "file"
                else jwt.PyJWKClient(settings.jwks_url, cache_keys=True, timeout=5)
            )

    def authenticate(self, authorization: str | bytes | None) -> Principal:
        """The caller an ``Authorization`` header value proves; :class:`AuthError` if none."""
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        if not authorization:
            raise AuthError(f"no credentials; {WHAT_TO_SEND}")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError(f"the Authorization header is not a bearer credential; {WHAT_TO_SEND}")
        sent = credential.encode()
        subject = None
        for key, owner in self._keys.items():  # every key compared: no early exit
            if hmac.compare_digest(sent, key):
                subject = owner
        if subject is not None:
            roles = {OPERATOR} if subject == TOKEN_SUBJECT or subject in self._operators else set()
            return Principal(subject, frozenset(roles), "key")
        if credential.count(".") == 2 and (self._secret is not None or self._jwks is not None):
            return self._verify_jwt(credential)
        raise AuthError(f"invalid credentials; {WHAT_TO_SEND}")

    def _verify_jwt(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if algorithm == "HS256" and self._secret is not None:
                key: Any = self._secret.get_secret_value()
            elif algorithm in ("RS256", "ES256") and self._jwks is not None:
                key = (
                    self._jwks.key_for(token)
                    if isinstance(self._jwks, _JwksFile)
                    else (self._jwks.get_signing_key_from_jwt(token))
                )
            else:
                raise AuthError(
                    f"JWT algorithm {algorithm!r} is not accepted here; sign with HS256 "
                    "(SCRIPTORIUM_JWT_SECRET) or RS256/ES256 (a SCRIPTORIUM_JWKS_URL key)"
                )
            claims = jwt.decode(
                token,
                key,
                algorithms=list(JWT_ALGORITHMS),
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(f"the JWT has expired; mint a new one ({WHAT_TO_SEND})") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKClientError, OSError, ValueError) as exc:
            raise AuthError(f"invalid JWT ({exc}); {WHAT_TO_SEND}") from exc
        raw_roles = claims.get("roles", [])
        roles = {str(r) for r in raw_roles} if isinstance(raw_roles, list) else set()
        subject = str(claims["sub"])
        if subject in self._operators:
            roles.add(OPERATOR)
        return Principal(subject, frozenset(roles), "jwt")


def mint_jwt(
    secret: str,
    subject: str,
    *,
    roles: list[str] | None = None,
    ttl_s: float = MINTED_TTL_S,
    audience: str | None = None,
) -> str:
    """An HS256 JWT for ``subject`` valid ``ttl_s`` seconds."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + math.ceil(ttl_s)}
    if roles:
        claims["roles"] = roles
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


_MINTED: dict[tuple[str, str], tuple[float, str]] = {}


def outgoing_credential(settings: CommonSettings) -> str | None:
    """What this process sends as its own bearer credential, by precedence: its own
    ``SCRIPTORIUM_API_KEY``, a JWT it mints (``sub`` = ``SCRIPTORIUM_IDENTITY``) with
    ``SCRIPTORIUM_JWT_SECRET``, the shared ``SCRIPTORIUM_TOKEN``; None when none is set."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if settings.jwt_secret is not None:
        subject = settings.identity or TOKEN_SUBJECT
        secret = settings.jwt_secret.get_secret_value()
        cache_key = (subject, hmac.new(secret.encode(), b"k", "sha256").hexdigest())
        cached = _MINTED.get(cache_key)
        if cached is not None and cached[0] - time.time() > MINTED_TTL_S / 4:
            return cached[1]
        roles = [OPERATOR] if subject in settings.operator_subjects else None
        token = mint_jwt(secret, subject, roles=roles, audience=settings.jwt_audience)
        _MINTED[cache_key] = (time.time() + MINTED_TTL_S, token)
        return token
    if settings.token is not None:
        return settings.token.get_secret_value()
    return None


def roles_of(state: Mapping[str, Any]) -> frozenset[str]:
    """The caller's roles from a call context's state (``auth`` set by the middleware)."""
    credentials = state.get("auth")
    return frozenset(getattr(credentials, "scopes", ()) or ())
