"""Routes of sessions: list, negotiate, read, rebind, renew, release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field

from protocol import telemetry
from registry.limits import (
    LEASE_CEILING_S,
    MAX_PAGE,
    MAX_ROLES,
    MAX_SKILL_LENGTH,
    NAME_PATTERN,
    SESSION_ID_PATTERN,
)
from registry.routes.common import ALLOWED_PEERS_ONLY, ERROR_RESPONSES, Absent, ServicesDep
from registry.sessions import Session, SessionState

#: 32 lowercase hex digits, not all zero (a W3C trace id), without look-ahead: the first
#: non-zero digit comes after i zeros.
TRACE_ID_PATTERN = (
    "^(" + "|".join(f"0{{{i}}}[1-9a-f][0-9a-f]{{{31 - i}}}" for i in range(32)) + ")$"
)
RoleName = Annotated[str, Field(pattern=NAME_PATTERN)]
SkillId = Annotated[str, Field(min_length=1, max_length=MAX_SKILL_LENGTH)]
#: A lease in seconds. The schema of each app states its ``max_session_lease_s`` as the
#: maximum (see ``registry.api``); LEASE_CEILING_S is the hard ceiling of any setting.
LeaseS = Annotated[
    float,
    Field(
        gt=0,
        le=LEASE_CEILING_S,
        allow_inf_nan=False,
        description="Lease in seconds; at most max_session_lease_s (default 3600).",
    ),
]
_STRICT = ConfigDict(strict=True)


class NegotiateBody(BaseModel):
    model_config = _STRICT

    roles: dict[RoleName, SkillId] = Field(
        min_length=1,
        max_length=MAX_ROLES,
        description="Role name -> skill id.",
        examples=[{"writer": "write"}],
        json_schema_extra={"additionalProperties": False},  # every key matches the pattern
    )
    lease_s: LeaseS | None = Field(default=None, description="Default session_lease_s (300 s).")
    trace_id: str | None = Field(
        default=None, pattern=TRACE_ID_PATTERN, description="W3C trace id; not all zeros."
    )
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)


class RebindBody(BaseModel):
    model_config = _STRICT

    role: RoleName


class RenewBody(BaseModel):
    model_config = _STRICT

    lease_s: LeaseS | None = Field(default=None, description="Default session_lease_s (300 s).")


router = APIRouter(responses=ERROR_RESPONSES, tags=["sessions"])


@router.get("/sessions", response_model=list[Session])
async def list_sessions(
    svc: ServicesDep,
    state: SessionState | Absent = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Newest first, at most.")] = 1000,
) -> list[Session]:
    """Active sessions and closed ones still retained, newest first."""
    return await svc.sessions.list(state=state, limit=limit)


@router.post("/sessions", response_model=Session, status_code=201, dependencies=ALLOWED_PEERS_ONLY)
async def negotiate_session(body: NegotiateBody, svc: ServicesDep, request: Request) -> Session:
    """Lease one healthy instance per role, all or nothing (409 when a role cannot be met).

    Without ``trace_id`` the session takes the caller's, from its ``traceparent`` header.
    """
    with telemetry.tracer().start_as_current_span(
        "negotiate session", context=telemetry.extract(request.headers), kind=SpanKind.SERVER
    ):
        return await svc.sessions.negotiate(
            body.roles, lease_s=body.lease_s, trace_id=body.trace_id, session_id=body.session_id
        )


@router.get("/sessions/{session_id}", response_model=Session)
async def get_session(session_id: str, svc: ServicesDep) -> Session:
    """One session."""
    return await svc.sessions.get(session_id)


@router.post(
    "/sessions/{session_id}/rebind",
    response_model=Session,
    dependencies=ALLOWED_PEERS_ONLY,
)
async def rebind_session(session_id: str, body: RebindBody, svc: ServicesDep) -> Session:
    """Move a role to another healthy instance (409 and no change when none is free)."""
    return await svc.sessions.rebind(session_id, body.role)


@router.post(
    "/sessions/{session_id}/renew",
    response_model=Session,
    dependencies=ALLOWED_PEERS_ONLY,
)
async def renew_session(
    session_id: str, svc: ServicesDep, body: RenewBody | None = None
) -> Session:
    """Extend the session's lease from now."""
    return await svc.sessions.renew(session_id, body.lease_s if body else None)


@router.delete("/sessions/{session_id}", status_code=204, dependencies=ALLOWED_PEERS_ONLY)
async def release_session(session_id: str, svc: ServicesDep) -> Response:
    """Give the session's leases back (idempotent)."""
    await svc.sessions.release(session_id)
    return Response(status_code=204)
