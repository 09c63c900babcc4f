"""Agent cards on a2a-sdk 1.3 (protocol v1.0): building, reading and validating them.

A card advertises JSON-RPC, HTTP+JSON and gRPC interfaces (in that order: JSON-RPC is the
preferred one), streaming, its skills (with tags, examples and input/output modes) and,
through an A2A extension, how many concurrent sessions the instance accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
)
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from protocol.streams import resume_extension

PROTOCOL_VERSION = "1.0"
JSONRPC_PATH = "/a2a/jsonrpc"
REST_PATH = "/a2a/rest"
CARD_PATH = "/.well-known/agent-card.json"
#: A2A extension through which an instance declares its session capacity.
CAPACITY_EXTENSION = "https://scriptorium.dev/a2a/extensions/capacity/v1"
#: Message metadata key naming the skill a request is for.
SKILL_METADATA_KEY = "skill"
BEARER_SCHEME = "bearer"


@dataclass(frozen=True)
class Skill:
    """One skill an agent offers: what goes into the card's ``skills`` list."""

    id: str
    name: str
    description: str
    tags: Sequence[str] = ()
    examples: Sequence[str] = ()
    input_modes: Sequence[str] = ("application/json", "text/plain")
    output_modes: Sequence[str] = ("application/json", "text/plain")
    #: Only callers with the operator role may use it; listed in the authenticated extended
    #: card only (when auth is on).
    operator_only: bool = False


@dataclass(frozen=True)
class CardSpec:
    """Everything that makes an agent's card, except where it is served.

    ``primary_skill`` takes requests that name no skill (generic A2A clients send plain text
    and no metadata); unset, an agent with one skill routes them there, others reject them.
    """

    name: str
    description: str
    skills: Sequence[Skill]
    version: str = "0.1.0"
    capacity: int = 8
    streaming: bool = True
    extra_extensions: Sequence[AgentExtension] = field(default_factory=tuple)
    primary_skill: str | None = None

    def __post_init__(self) -> None:
        ids = [skill.id for skill in self.skills]
        if self.primary_skill is not None and self.primary_skill not in ids:
            raise CardError(f"primary_skill {self.primary_skill!r} is not one of: {ids}")

    @property
    def default_skill(self) -> str | None:
        """Where a request naming no skill goes: the primary skill, or the only one."""
        if self.primary_skill is not None:
            return self.primary_skill
        return self.skills[0].id if len(self.skills) == 1 else None


class CardError(ValueError):
    """A card that cannot be used; the message says what is wrong."""


def build_agent_card(
    spec: CardSpec,
    base_url: str,
    *,
    grpc_url: str | None = None,
    require_token: bool = False,
    public: bool = False,
) -> AgentCard:
    """Build the card an agent serves at ``base_url`` + ``/.well-known/agent-card.json``.

    ``grpc_url`` (``http://host:port`` of its gRPC server) adds the GRPC interface.
    ``require_token`` declares the bearer security scheme; with it, ``public`` builds the
    public card: operator-only skills left out, ``capabilities.extended_agent_card`` on (the
    card without ``public`` is the authenticated extended card).
    """
    public = public and require_token
    base = base_url.rstrip("/")
    grpc = (
        [AgentInterface(url=grpc_url, protocol_binding="GRPC", protocol_version=PROTOCOL_VERSION)]
        if grpc_url
        else []
    )
    capacity = Struct()
    capacity.update({"max_sessions": spec.capacity})
    card = AgentCard(
        name=spec.name,
        description=spec.description,
        version=spec.version,
        provider=AgentProvider(organization="Scriptorium", url="https://scriptorium.dev"),
        supported_interfaces=[
            AgentInterface(
                url=base + JSONRPC_PATH,
                protocol_binding="JSONRPC",
                protocol_version=PROTOCOL_VERSION,
            ),
            AgentInterface(
                url=base + REST_PATH,
                protocol_binding="HTTP+JSON",
                protocol_version=PROTOCOL_VERSION,
            ),
            *grpc,
        ],
        capabilities=AgentCapabilities(
            streaming=spec.streaming,
            push_notifications=True,
            extensions=[
                AgentExtension(
                    uri=CAPACITY_EXTENSION,
                    description="Concurrent sessions one instance accepts.",
                    required=False,
                    params=capacity,
                ),
                resume_extension(),
                *spec.extra_extensions,
            ],
        ),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json", "text/plain"],
        skills=[
            AgentSkill(
                id=s.id,
                name=s.name,
                description=s.description,
                tags=list(s.tags),
                examples=list(s.examples),
                input_modes=list(s.input_modes),
                output_modes=list(s.output_modes),
            )
            for s in spec.skills
            if not (public and s.operator_only)
        ],
    )
    if require_token:
        card.capabilities.extended_agent_card = True
        card.security_schemes[BEARER_SCHEME].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    bearer_format="API key or JWT",
                    description="A static key (SCRIPTORIUM_TOKEN, SCRIPTORIUM_API_KEYS) or a "
                    "JWT with sub and exp (HS256 shared secret, or a JWKS key). Operator-only "
                    "skills need the operator role.",
                )
            )
        )
        requirement = SecurityRequirement()
        requirement.schemes[BEARER_SCHEME].SetInParent()
        card.security_requirements.append(requirement)
    return card


def card_to_dict(card: AgentCard) -> dict[str, Any]:
    """The card as the JSON object served on the wire."""
    data: dict[str, Any] = json_format.MessageToDict(card)
    return data


def card_from_dict(data: Any) -> AgentCard:
    """Parse a card from its JSON form; raises :class:`CardError` with the reason."""
    if not isinstance(data, dict):
        raise CardError("an agent card must be a JSON object")
    card = AgentCard()
    try:
        json_format.ParseDict(data, card, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise CardError(f"not an A2A v1.0 agent card: {exc}") from exc
    return card


def card_capacity(card: AgentCard) -> int:
    """Sessions the instance accepts, from the capacity extension (1 when undeclared)."""
    for ext in card.capabilities.extensions:
        if ext.uri == CAPACITY_EXTENSION:
            value = dict(ext.params).get("max_sessions", 1)
            return int(value) if isinstance(value, int | float) else 1
    return 1


def card_base_url(card: AgentCard) -> str:
    """Scheme, host and port the agent's HTTP is served at (from its first HTTP interface)."""
    http = [i for i in card.supported_interfaces if i.protocol_binding != "GRPC"]
    if not http:
        raise CardError("the card has no JSONRPC or HTTP+JSON interface")
    parts = urlsplit(http[0].url)
    return f"{parts.scheme}://{parts.netloc}"


def skill_ids(card: AgentCard) -> list[str]:
    """The ids of the card's skills, in card order."""
    return [skill.id for skill in card.skills]


def accepted_input_modes(card: AgentCard, skill_id: str | None) -> frozenset[str]:
    """Media types ``skill_id`` takes: its own modes, else the card's defaults.

    For a skill the card does not list, every mode any skill takes (the SDK's union).
    Empty means nothing is declared, which accepts anything.
    """
    for skill in card.skills:
        if skill.id == skill_id:
            return frozenset(skill.input_modes or card.default_input_modes)
    modes = set(card.default_input_modes)
    for skill in card.skills:
        modes.update(skill.input_modes)
    return frozenset(modes)


def validate_card(card: AgentCard) -> None:
    """Check what Scriptorium relies on; raises :class:`CardError` naming the first problem."""
    if not card.name.strip():
        raise CardError("card.name is empty")
    if not card.version.strip():
        raise CardError("card.version is empty")
    if not card.skills:
        raise CardError("card.skills is empty: an agent must offer at least one skill")
    seen: set[str] = set()
    for skill in card.skills:
        if not skill.id.strip():
            raise CardError("a skill has an empty id")
        if not skill.tags:
            raise CardError(f"skill {skill.id!r} has no tags (A2A requires at least one)")
        if skill.id in seen:
            raise CardError(f"skill id {skill.id!r} appears twice")
        seen.add(skill.id)
    if not card.supported_interfaces:
        raise CardError("card.supported_interfaces is empty")
    hosts, http_netlocs = set(), set()
    for interface in card.supported_interfaces:
        parts = urlsplit(interface.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CardError(f"interface url {interface.url!r} is not an http(s) URL")
        if interface.protocol_binding not in ("JSONRPC", "HTTP+JSON", "GRPC"):
            raise CardError(f"unknown protocol_binding {interface.protocol_binding!r}")
        hosts.add(parts.hostname)
        if interface.protocol_binding != "GRPC":  # gRPC has a port of its own
            http_netlocs.add(parts.netloc)
    if len(hosts) != 1 or len(http_netlocs) > 1:
        raise CardError(
            "all interfaces of one instance must share one host, and its HTTP ones one port"
        )
    if card_capacity(card) < 1:
        raise CardError("capacity (max_sessions) must be at least 1")
