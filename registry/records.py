"""What the registry stores and returns: agent records, their states and the change feed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field, computed_field, model_validator

from registry.redis_client import as_int, text


# The rule (healthy below ``healthy_window_ms``, suspect below ``heartbeat_ttl_ms``, offline
# after) is computed in one place, the Lua function ``state_of`` in ``registry.lua``, whose
# state names are formatted from these values. (A comment: the docstring is in the schema.)
class AgentState(StrEnum):
    """Liveness of an instance, derived from the age of its last heartbeat."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    OFFLINE = "offline"


#: The fields of an agent hash that make an :class:`AgentRecord`, in the order the ``SELECT``
#: script (``registry.lua``) returns them and :meth:`AgentRecord.from_stored` reads them.
#: The one statement of that order: the script's field list is generated from it.
AGENT_FIELDS = (
    "last_seen",
    "capacity",
    "leased",
    "load",
    "registered_at",
    "name",
    "url",
    "skills",
    "tags",
    "card",
)


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

    @classmethod
    def from_stored(cls, instance_id: str, state: AgentState, values: Sequence[Any]) -> AgentRecord:
        """The record from its hash's :data:`AGENT_FIELDS` values (as Redis replies them)
        and its state (computed by the ``SELECT`` script, see ``registry.lua``)."""
        stored = dict(zip(AGENT_FIELDS, values, strict=True))
        return cls(
            id=instance_id,
            name=text(stored["name"]),
            url=text(stored["url"]),
            card_json=text(stored["card"]),
            skills=json.loads(stored["skills"]),
            tags=json.loads(stored["tags"]),
            capacity=as_int(stored["capacity"]),
            leased=as_int(stored["leased"]),
            load=as_int(stored["load"]),
            state=state,
            registered_at=as_int(stored["registered_at"]),
            last_seen=as_int(stored["last_seen"]),
        )

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
