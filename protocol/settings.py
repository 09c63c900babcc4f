"""Settings shared by every component, read from the environment (pydantic-settings).

Each component extends :class:`CommonSettings` with its own fields; nothing reads
``os.environ`` directly.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_PORT = 8700
#: Port offset of each component from the base port (registry 8700, orchestrator 8701, ...).
PORT_OFFSETS: dict[str, int] = {
    "registry": 0,
    "orchestrator": 1,
    "retriever": 2,
    "writer": 3,
    "critic": 4,
    "inference": 5,
}
AGENT_NAMES: tuple[str, ...] = ("orchestrator", "retriever", "writer", "critic", "inference")


class CommonSettings(BaseSettings):
    """Settings every Scriptorium process understands (prefix ``SCRIPTORIUM_``)."""

    model_config = SettingsConfigDict(env_prefix="SCRIPTORIUM_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "SCRIPTORIUM_REDIS_URL"),
        description="Redis/Valkey URL. Unset: `scriptorium up` starts an embedded Valkey.",
    )
    redis_prefix: str = Field(
        default="scriptorium", description="Prefix of every Redis key (one namespace per stack)."
    )
    data_dir: Path = Field(default=Path(".data"), description="Where local state lives.")
    host: str = Field(default="127.0.0.1", description="Interface servers bind to.")
    advertise_host: str | None = Field(
        default=None, description="Host name put in agent cards (default: `host`)."
    )
    base_port: int = Field(default=DEFAULT_BASE_PORT, ge=1, le=65_000)
    registry_url: str | None = Field(
        default=None, description="Discovery endpoint (default: http://host:base_port)."
    )
    auth: Literal["required", "off"] = Field(
        default="required",
        description="`required`: every agent and registry write/stream needs a bearer "
        "credential (a process with none configured refuses to start); `off`: local "
        "development only.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Shared static bearer key (subject `scriptorium`, an operator); also what "
        "this process sends when it has no key or JWT secret of its own.",
    )
    api_keys: SecretStr | None = Field(
        default=None, description="Accepted static keys: `subject=key,subject=key`."
    )
    api_key: SecretStr | None = Field(
        default=None, description="This process's own bearer key for the calls it makes."
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Shared HS256 secret: JWTs signed with it are accepted, and this process "
        "mints its own (sub = SCRIPTORIUM_IDENTITY).",
    )
    jwks_url: str | None = Field(
        default=None,
        description="JWKS whose keys (RS256/ES256) sign accepted JWTs: https://... or file:///path.",
    )
    jwt_audience: str | None = Field(
        default=None, description="Required `aud` of accepted JWTs (and of minted ones)."
    )
    identity: str | None = Field(
        default=None,
        description="Subject of the JWTs this process mints (the launcher sets the component's "
        "name).",
    )
    operators: str = Field(
        default="",
        description="Comma-separated subjects with the operator role (operator-only skills).",
    )
    connect_timeout_s: float = Field(default=3.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=15.0, gt=0)
    allowed_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Networks whose agents may register.",
    )
    max_request_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="Log one JSON object per line.")

    @field_validator("allowed_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    def port_of(self, component: str) -> int:
        """The default port of a component (``registry`` or an agent name)."""
        return self.base_port + PORT_OFFSETS[component]

    @property
    def public_host(self) -> str:
        """The host other processes use to reach servers started with these settings."""
        if self.advertise_host:
            return self.advertise_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    @property
    def resolved_registry_url(self) -> str:
        """The registry's discovery endpoint."""
        if self.registry_url:
            return self.registry_url.rstrip("/")
        return f"http://{self.public_host}:{self.port_of('registry')}"

    @property
    def operator_subjects(self) -> frozenset[str]:
        """The subjects of ``operators``."""
        return frozenset(s.strip() for s in self.operators.split(",") if s.strip())

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers carrying this process's own credential (:mod:`protocol.auth`)."""
        from protocol.auth import outgoing_credential

        credential = outgoing_credential(self)
        return {} if credential is None else {"Authorization": f"Bearer {credential}"}
