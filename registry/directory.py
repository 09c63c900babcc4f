"""The agent directory: registration, heartbeats, reads and liveness sweeps of instances.

Admission (what may register) is in :mod:`registry.admission`, the change feed in
:mod:`registry.changes`; :class:`Registry` composes them with the session broker.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import redis.asyncio as aioredis
from a2a.types import AgentCard

from protocol.cards import skill_ids
from registry import lua
from registry.admission import CardAdmission
from registry.changes import ChangeFeed
from registry.errors import InstanceConflict, InvalidRequest
from registry.keys import RedisKeys
from registry.limits import MAX_LOAD
from registry.records import (
    AGENT_FIELDS,
    AgentRecord,
    AgentState,
    Change,
    StateTransition,
    SweepReport,
)
from registry.redis_client import text
from registry.sessions import SessionBroker
from registry.settings import RegistrySettings
from registry.streams import StreamHub

log = logging.getLogger(__name__)


class Registry:
    """Agent instances registered in Redis, and their liveness.

    Every write is one Lua script (atomic, one round trip); times come from the Redis
    server clock. Several registry replicas may share one Redis.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: RegistrySettings,
        *,
        keys: RedisKeys | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys or RedisKeys(settings.redis_prefix)
        self.sessions = SessionBroker(redis, settings, keys=self.keys)
        self.admission = CardAdmission(settings, http=http)
        self.feed = ChangeFeed(redis, self.keys)

    # -- registration -------------------------------------------------------------------

    async def register(
        self,
        card: AgentCard | dict[str, Any],
        *,
        instance_id: str | None = None,
        verify: bool = True,
    ) -> AgentRecord:
        """Register (or refresh) an instance from its card.

        Raises :class:`InvalidCard` for a malformed card (or an agent name outside the
        alphabet, or a capacity outside 1..``MAX_CAPACITY``), :class:`InvalidRequest` for an
        instance id outside the alphabet, :class:`RegistrationRefused` when the card's host
        is outside ``allowed_networks`` or its card cannot be fetched, :class:`SpoofedCard`
        when ``verify`` finds the served card differs, :class:`UntrustedCard` when its
        signature is missing (signing required), by an unknown key (required) or does not
        verify (always), and :class:`InstanceConflict` when the id belongs to another live
        instance (another card URL, or another signing key).
        """
        admitted = await self.admission.admit(card, instance_id=instance_id, verify=verify)
        instance_id, base = admitted.instance_id, admitted.base
        skills = skill_ids(admitted.card)
        tags = list(dict.fromkeys(tag for skill in admitted.card.skills for tag in skill.tags))
        card_json = _compact(admitted.wire)
        reply = await lua.REGISTER(
            self.redis,
            [self.keys.agent(instance_id), self.keys.agents, self.keys.changes],
            [
                instance_id,
                card_json,
                admitted.card.name,
                base,
                admitted.capacity,
                _compact(skills),
                _compact(tags),
                self.keys.skill_prefix(),
                self.keys.tag_prefix(),
                self.settings.changes_maxlen,
                admitted.binding,
                self.settings.heartbeat_ttl_ms,
                self.settings.healthy_window_ms,
            ],
        )
        if int(reply[0]) == -1:
            bound_to = text(reply[1])
            log.warning(
                "registration refused: instance id held by a live instance",
                extra={"instance_id": instance_id, "url": base, "bound_to": bound_to},
            )
            raise InstanceConflict(instance_id, bound_to, admitted.binding)
        _, now, leased, registered_at = reply
        log.info(
            "agent registered",
            extra={"instance_id": instance_id, "url": base, "skills": skills, "verified": verify},
        )
        return AgentRecord(
            id=instance_id,
            name=admitted.card.name,
            url=base,
            card_json=card_json,
            skills=skills,
            tags=tags,
            capacity=admitted.capacity,
            leased=int(leased),
            load=0,
            state=AgentState.HEALTHY,
            registered_at=int(registered_at),
            last_seen=int(now),
        )

    async def heartbeat(self, instance_id: str, *, load: int = 0) -> bool:
        """Mark an instance alive; False when it is unknown (register it again then)."""
        if not 0 <= load <= MAX_LOAD:
            raise InvalidRequest(
                f"load must be in 0..{MAX_LOAD} (got {load}); report in-flight tasks"
            )
        known = await lua.HEARTBEAT(
            self.redis,
            [self.keys.agent(instance_id), self.keys.changes],
            [instance_id, load, self.settings.changes_maxlen],
        )
        return bool(known)

    async def deregister(self, instance_id: str) -> bool:
        """Remove an instance and its index entries; False when it was not registered."""
        removed = await lua.DEREGISTER(
            self.redis,
            [self.keys.agent(instance_id), self.keys.agents, self.keys.changes],
            [
                instance_id,
                self.keys.skill_prefix(),
                self.keys.tag_prefix(),
                self.settings.changes_maxlen,
            ],
        )
        if removed:
            log.info("agent deregistered", extra={"instance_id": instance_id})
        return bool(removed)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, instance_id: str) -> AgentRecord | None:
        """The instance's record, or None when it is not registered."""
        records = await self._select([], healthy_only=False, ids=[instance_id])
        return records[0] if records else None

    async def list(self, *, skill: str | None = None, tag: str | None = None) -> list[AgentRecord]:
        """Every registered instance in any state, optionally filtered, sorted by id."""
        records = await self._select(self._index_sets(skill, tag), healthy_only=False)
        return sorted(records, key=lambda r: r.id)

    async def discover(
        self, skill: str | None = None, tag: str | None = None
    ) -> builtins.list[AgentRecord]:
        """Healthy instances (optionally by skill and/or tag), most free capacity first."""
        records = await self._select(self._index_sets(skill, tag), healthy_only=True)
        records.sort(key=lambda r: (r.leased - r.capacity, r.id))
        return records

    def _index_sets(self, skill: str | None, tag: str | None) -> builtins.list[str]:
        """The index sets to intersect for a filter (every agent without one)."""
        sets = []
        if skill is not None:
            sets.append(self.keys.skill(skill))
        if tag is not None:
            sets.append(self.keys.tag(tag))
        return sets or [self.keys.agents]

    async def _select(
        self, sets: builtins.list[str], *, healthy_only: bool, ids: Sequence[str] = ()
    ) -> builtins.list[AgentRecord]:
        """Records of the members of ``sets`` (or of ``ids``), states computed by SELECT."""
        reply = await lua.SELECT(
            self.redis,
            sets,
            [
                self.keys.agent_prefix(),
                self.settings.healthy_window_ms,
                self.settings.heartbeat_ttl_ms,
                "1" if healthy_only else "",
                *ids,
            ],
        )
        width = len(AGENT_FIELDS) + 2
        return [
            AgentRecord.from_stored(
                text(reply[i]), AgentState(text(reply[i + 1])), reply[i + 2 : i + width]
            )
            for i in range(1, len(reply), width)
        ]

    # -- liveness -------------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Bring stored states up to date, delete long-offline instances, expire sessions.

        Emits a ``state`` change per transition. Atomic per step, so several replicas can
        sweep at once without duplicate events.
        """
        settings = self.settings
        purge_ms = settings.heartbeat_ttl_ms + int(settings.offline_retention_s * 1000)
        moved, removed = await lua.SWEEP(
            self.redis,
            [self.keys.agents, self.keys.changes],
            [
                self.keys.agent_prefix(),
                self.keys.skill_prefix(),
                self.keys.tag_prefix(),
                settings.healthy_window_ms,
                settings.heartbeat_ttl_ms,
                purge_ms,
                settings.changes_maxlen,
            ],
        )
        transitions = [
            StateTransition(
                instance_id=text(moved[i]),
                old=AgentState(text(moved[i + 1])) if moved[i + 1] else None,
                new=AgentState(text(moved[i + 2])),
            )
            for i in range(0, len(moved), 3)
        ]
        report = SweepReport(
            transitions=transitions,
            removed=[text(r) for r in removed],
            expired_sessions=await self.sessions.expire_due(),
        )
        for t in transitions:
            log.info(
                "agent state changed",
                extra={"instance_id": t.instance_id, "old": t.old, "new": t.new},
            )
        if report.removed or report.expired_sessions:
            log.info(
                "sweep removed entries",
                extra={"agents": report.removed, "sessions": report.expired_sessions},
            )
        return report

    # -- change feed --------------------------------------------------------------------

    def watch(
        self, last_id: str = "$", *, block_ms: int = 5000, hub: StreamHub | None = None
    ) -> AsyncGenerator[Change, None]:
        """Follow the change feed: :meth:`ChangeFeed.watch <registry.changes.ChangeFeed.watch>`."""
        return self.feed.watch(last_id, block_ms=block_ms, hub=hub)

    async def changes(self, *, after: str = "-", count: int = 1000) -> builtins.list[Change]:
        """Entries of the change feed after ``after`` (exclusive; ``-`` from the start)."""
        return await self.feed.read(after=after, count=count)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
