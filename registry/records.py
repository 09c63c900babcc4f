"""What the registry stores and returns: agent records, their states and the change feed."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field, computed_field, model_validator


class AgentState(StrEnum):
    """Liveness of an instance, derived from the age of its last heartbeat."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    OFFLINE = "offline"


def agent_state(last_seen_ms: int, now_ms: int, *, healthy_ms: int, ttl_ms: int) -> AgentState:
    """Healthy while the heartbeat is younger than ``healthy_ms``, suspect until ``ttl_ms``."""
    age = now_ms - last_seen_ms
    if age < healthy_ms:
        return AgentState.HEALTHY
    if age < ttl_ms:
        return AgentState.SUSPECT
    return AgentState.OFFLINE


class AgentRecord(BaseModel):
    """One registered agent instance. Times are epoch milliseconds (Redis server clock).

    ``card`` is parsed from ``card_json`` on first access, so discovery does not pay for
    cards nobody reads. Construct with either ``card`` (a dict) or ``card_json``.
    """

    id: str = Field(description="Instance id, by default `name@host-port`.")
    name: str
    url: str = Field(description="Base URL the instance is served at.")
    skills: list[str]
    tags: list[str]
    capacity: int = Field(description="Sessions the instance accepts at once.")
    leased: int = Field(description="Sessions currently holding a lease on the instance.")
    load: int = Field(description="In-flight tasks, as last reported by heartbeat.")
    state: AgentState
    registered_at: int
    last_seen: int
    card_json: str = Field(exclude=True, repr=False, description="The card as compact JSON.")

    @model_validator(mode="before")
    @classmethod
    def _card_as_json(cls, data: Any) -> Any:
        if isinstance(data, dict) and "card_json" not in data and "card" in data:
            rest = {k: v for k, v in data.items() if k != "card"}
            rest["card_json"] = json.dumps(data["card"], separators=(",", ":"))
            return rest
        return data

    @computed_field(description="The agent card, as served on the wire.")  # type: ignore[prop-decorator]
    @cached_property
    def card(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.card_json)
        return parsed

    @property
    def free(self) -> int:
        """Capacity not leased to a session."""
        return self.capacity - self.leased


class StateTransition(BaseModel):
    """A state change the sweeper recorded."""

    instance_id: str
    old: AgentState | None
    new: AgentState


class SweepReport(BaseModel):
    """What one :meth:`Registry.sweep` did."""

    transitions: list[StateTransition] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list, description="Instances deleted.")
    expired_sessions: list[str] = Field(default_factory=list)


class ChangeKind(StrEnum):
    """Kinds of entries in the change feed."""

    REGISTERED = "registered"
    DEREGISTERED = "deregistered"
    STATE = "state"
    SESSION_OPENED = "session.opened"
    SESSION_REBOUND = "session.rebound"
    SESSION_RELEASED = "session.released"
    SESSION_EXPIRED = "session.expired"


class Change(BaseModel):
    """One entry of the change feed (``RedisKeys.changes``)."""

    id: str = Field(description="Stream id; pass it back to resume after this entry.")
    kind: str
    instance_id: str | None = None
    session_id: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
