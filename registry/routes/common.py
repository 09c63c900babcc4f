"""What every route module shares: the app's services, the peer check of writes, the
error body and the optional-parameter marker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from protocol.network import IPNetwork, address_allowed
from registry.directory import Registry
from registry.events import SessionLog
from registry.middleware import Metrics
from registry.sessions import SessionBroker
from registry.settings import RegistrySettings
from registry.streams import StreamHub, StreamSlots

#: An optional query or header parameter: left out, never "null" (not in the schema).
Absent = SkipJsonSchema[None]


class FieldError(BaseModel):
    """One reason a request failed validation."""

    loc: list[str | int] = Field(description="Where: `body`/`query`/`path`/`header`, then keys.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error the API answers (4xx and 5xx) has this shape."""

    detail: str = Field(description="What went wrong and what to do about it.")
    errors: list[FieldError] | None = Field(
        default=None, description="For a request that failed validation (422): each reason."
    )


#: The error answers every route may give (each router declares them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)
}


@dataclass(frozen=True)
class Services:
    """What the routes use; one set per app."""

    settings: RegistrySettings
    redis: aioredis.Redis
    registry: Registry
    sessions: SessionBroker
    log: SessionLog
    metrics: Metrics
    networks: list[IPNetwork]
    hub: StreamHub
    slots: StreamSlots


def services_of(request: Request) -> Services:
    """The services of the app serving ``request``."""
    services: Services = request.app.state.services
    return services


#: A route parameter receiving the app's :class:`Services`.
ServicesDep = Annotated[Services, Depends(services_of)]


async def _require_allowed_peer(request: Request, svc: ServicesDep) -> None:
    """Writes need a peer in allowed_networks (the bearer credential is checked by
    middleware)."""
    peer = request.client.host if request.client else None
    if peer is None or not address_allowed(peer, svc.networks):
        raise HTTPException(
            403,
            f"peer {peer} is outside the allowed networks {svc.settings.allowed_networks}; "
            "call from an allowed host or extend SCRIPTORIUM_ALLOWED_NETWORKS",
        )


#: The dependencies of a write route: the peer must be inside ``allowed_networks``.
ALLOWED_PEERS_ONLY = [Depends(_require_allowed_peer)]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_stream_path(path: str) -> bool:
    """Whether ``path`` is one of the event streams (guarded like writes unless auth is off)."""
    return path == "/changes" or (path.startswith("/sessions/") and path.endswith("/events"))


def is_guarded(method: str, path: str) -> bool:
    """Whether a request needs the bearer credential (when auth is enforced)."""
    return method in WRITE_METHODS or is_stream_path(path)
