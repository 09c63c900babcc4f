"""The body of ``POST /agents``: an A2A v1.0 agent card, as a strict JSON schema.

These models mirror the protobuf ``AgentCard`` of a2a-sdk field for field (JSON names, no
other keys, no nulls, no type coercion), plus what Scriptorium requires of a card
(``protocol.cards.validate_card``) where JSON Schema can say it: a name from the agent name
alphabet, a version, at least one skill with an id and a tag, at least one interface with
an http(s) URL. So the published schema states what the API accepts, and FastAPI refuses
the rest (422) before the registry sees it. ``tests/registry/test_registry_limits.py``
checks the mirror against the SDK's descriptor.

Rules JSON Schema cannot state are checked by the registry (422 ``InvalidCard``): skill ids
are unique, every interface shares one host (and the HTTP ones one port), at least one
interface is JSONRPC or HTTP+JSON, and the capacity extension's ``max_sessions`` is in
``1..MAX_CAPACITY``.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from registry.limits import NAME_PATTERN

_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    (
        f"({_H16}:){{7}}{_H16}",
        f"({_H16}:){{1,7}}:",
        f"({_H16}:){{1,6}}:{_H16}",
        f"({_H16}:){{1,5}}(:{_H16}){{1,2}}",
        f"({_H16}:){{1,4}}(:{_H16}){{1,3}}",
        f"({_H16}:){{1,3}}(:{_H16}){{1,4}}",
        f"({_H16}:){{1,2}}(:{_H16}){{1,5}}",
        f"{_H16}:(:{_H16}){{1,6}}",
        f":((:{_H16}){{1,7}}|:)",
    )
)
_PORT = "([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: An http(s) URL with a host (a name or a bracketed IPv6 address), an optional port in
#: 0..65535 and an optional path.
URL_PATTERN = rf"^https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[({_IPV6})\])(:{_PORT})?(/[^\s?#]*)?$"

NonBlank = Annotated[str, Field(pattern=r"\S")]
Url = Annotated[str, Field(pattern=URL_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"{', '.join(nulls)} may not be null: leave the field out")
        return data


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # the default (None) means "left out", not null


T = TypeVar("T")
#: An optional field: it may be left out, never sent as null.
Opt = Annotated[T | SkipJsonSchema[None], Field(default=None, json_schema_extra=_no_default)]


class AgentInterface(_Strict):
    url: Url
    protocolBinding: Literal["JSONRPC", "HTTP+JSON", "GRPC"]
    tenant: Opt[str] = None
    protocolVersion: Opt[str] = None


class AgentProvider(_Strict):
    url: Opt[str] = None
    organization: Opt[str] = None


class AgentExtension(_Strict):
    uri: Opt[str] = None
    description: Opt[str] = None
    required: Opt[bool] = None
    params: Opt[dict[str, Any]] = None


class AgentCapabilities(_Strict):
    streaming: Opt[bool] = None
    pushNotifications: Opt[bool] = None
    extensions: Opt[list[AgentExtension]] = None
    extendedAgentCard: Opt[bool] = None


class APIKeySecurityScheme(_Strict):
    description: Opt[str] = None
    location: Opt[str] = None
    name: Opt[str] = None


class HTTPAuthSecurityScheme(_Strict):
    description: Opt[str] = None
    scheme: Opt[str] = None
    bearerFormat: Opt[str] = None


class AuthorizationCodeOAuthFlow(_Strict):
    authorizationUrl: Opt[str] = None
    tokenUrl: Opt[str] = None
    refreshUrl: Opt[str] = None
    scopes: Opt[dict[str, str]] = None
    pkceRequired: Opt[bool] = None


class ClientCredentialsOAuthFlow(_Strict):
    tokenUrl: Opt[str] = None
    refreshUrl: Opt[str] = None
    scopes: Opt[dict[str, str]] = None


class ImplicitOAuthFlow(_Strict):
    authorizationUrl: Opt[str] = None
    refreshUrl: Opt[str] = None
    scopes: Opt[dict[str, str]] = None


class PasswordOAuthFlow(_Strict):
    tokenUrl: Opt[str] = None
    refreshUrl: Opt[str] = None
    scopes: Opt[dict[str, str]] = None


class DeviceCodeOAuthFlow(_Strict):
    deviceAuthorizationUrl: Opt[str] = None
    tokenUrl: Opt[str] = None
    refreshUrl: Opt[str] = None
    scopes: Opt[dict[str, str]] = None


class _OneOf(_Strict):
    """A protobuf ``oneof``: at most one of the fields is set."""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 1})

    @model_validator(mode="after")
    def _at_most_one(self) -> _OneOf:
        if len(self.model_fields_set) > 1:
            raise ValueError(f"set one of {', '.join(sorted(self.model_fields_set))}, not several")
        return self


class OAuthFlows(_OneOf):
    authorizationCode: Opt[AuthorizationCodeOAuthFlow] = None
    clientCredentials: Opt[ClientCredentialsOAuthFlow] = None
    implicit: Opt[ImplicitOAuthFlow] = None
    password: Opt[PasswordOAuthFlow] = None
    deviceCode: Opt[DeviceCodeOAuthFlow] = None


class OAuth2SecurityScheme(_Strict):
    description: Opt[str] = None
    flows: Opt[OAuthFlows] = None
    oauth2MetadataUrl: Opt[str] = None


class OpenIdConnectSecurityScheme(_Strict):
    description: Opt[str] = None
    openIdConnectUrl: Opt[str] = None


class MutualTlsSecurityScheme(_Strict):
    description: Opt[str] = None


class SecurityScheme(_OneOf):
    apiKeySecurityScheme: Opt[APIKeySecurityScheme] = None
    httpAuthSecurityScheme: Opt[HTTPAuthSecurityScheme] = None
    oauth2SecurityScheme: Opt[OAuth2SecurityScheme] = None
    openIdConnectSecurityScheme: Opt[OpenIdConnectSecurityScheme] = None
    mtlsSecurityScheme: Opt[MutualTlsSecurityScheme] = None


class StringList(_Strict):
    list: Opt[builtins.list[str]] = None


class SecurityRequirement(_Strict):
    schemes: Opt[dict[str, StringList]] = None


class AgentSkill(_Strict):
    id: NonBlank
    name: Opt[str] = None
    description: Opt[str] = None
    tags: Annotated[list[str], Field(min_length=1)]
    examples: Opt[list[str]] = None
    inputModes: Opt[list[str]] = None
    outputModes: Opt[list[str]] = None
    securityRequirements: Opt[list[SecurityRequirement]] = None


class AgentCardSignature(_Strict):
    protected: Opt[str] = None
    signature: Opt[str] = None
    header: Opt[dict[str, Any]] = None


class CardBody(_Strict):
    """An A2A v1.0 agent card (JSON form of the protobuf ``AgentCard``)."""

    model_config = ConfigDict(title="AgentCard")

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="The agent's name.")]
    description: Opt[str] = None
    supportedInterfaces: Annotated[list[AgentInterface], Field(min_length=1)]
    provider: Opt[AgentProvider] = None
    version: NonBlank
    documentationUrl: Opt[str] = None
    capabilities: Opt[AgentCapabilities] = None
    securitySchemes: Opt[dict[str, SecurityScheme]] = None
    securityRequirements: Opt[list[SecurityRequirement]] = None
    defaultInputModes: Opt[list[str]] = None
    defaultOutputModes: Opt[list[str]] = None
    skills: Annotated[list[AgentSkill], Field(min_length=1)]
    signatures: Opt[list[AgentCardSignature]] = None
    iconUrl: Opt[str] = None

    def wire(self) -> dict[str, Any]:
        """The card as it was sent (the fields given, JSON names)."""
        return self.model_dump(exclude_unset=True)
