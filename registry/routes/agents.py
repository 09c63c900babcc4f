"""Routes of agent instances: list, read, register, deregister."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from pydantic import Field

from registry.card_schema import CardBody
from registry.errors import AgentNotFound
from registry.limits import INSTANCE_ID_PATTERN, MAX_SKILL_LENGTH
from registry.records import AgentRecord
from registry.routes.common import ALLOWED_PEERS_ONLY, ERROR_RESPONSES, Absent, ServicesDep

SkillText = Annotated[str, Field(max_length=MAX_SKILL_LENGTH)]

router = APIRouter(responses=ERROR_RESPONSES, tags=["agents"])


@router.get("/agents", response_model=list[AgentRecord])
async def list_agents(
    svc: ServicesDep,
    skill: Annotated[SkillText | Absent, Query()] = None,
    tag: Annotated[SkillText | Absent, Query()] = None,
    healthy_only: Annotated[
        bool, Query(description="Only healthy instances, most free capacity first.")
    ] = False,
) -> list[AgentRecord]:
    """Registered instances (card, state, load, leases, capacity)."""
    if healthy_only:
        return await svc.registry.discover(skill, tag)
    return await svc.registry.list(skill=skill, tag=tag)


@router.get("/agents/{instance_id:path}", response_model=AgentRecord)
async def get_agent(instance_id: str, svc: ServicesDep) -> AgentRecord:
    """One instance."""
    record = await svc.registry.get(instance_id)
    if record is None:
        raise AgentNotFound(instance_id)
    return record


@router.post(
    "/agents",
    response_model=AgentRecord,
    status_code=201,
    dependencies=ALLOWED_PEERS_ONLY,
)
async def register_agent(
    svc: ServicesDep,
    card: Annotated[CardBody, Body(description="The agent card (A2A v1.0 JSON).")],
    instance_id: Annotated[
        Annotated[str, Field(pattern=INSTANCE_ID_PATTERN)] | Absent,
        Query(description="Default: `name@host-port` from the card's name and URL."),
    ] = None,
) -> AgentRecord:
    """Register an instance; the registry fetches its card to check it is the same.

    409 when the instance id is held by another live instance (another card URL). Besides
    the schema, a card needs unique skill ids, one host for every interface (one port for
    the HTTP ones), a JSONRPC or HTTP+JSON interface and a capacity in 1..1000000 (422).
    """
    return await svc.registry.register(card.wire(), instance_id=instance_id, verify=True)


@router.delete("/agents/{instance_id:path}", status_code=204, dependencies=ALLOWED_PEERS_ONLY)
async def deregister_agent(instance_id: str, svc: ServicesDep) -> Response:
    """Remove an instance."""
    if not await svc.registry.deregister(instance_id):
        raise AgentNotFound(instance_id)
    return Response(status_code=204)
