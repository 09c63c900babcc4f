"""The agent registry: registration, heartbeats, discovery, liveness sweeps, change feed."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from a2a.types import AgentCard

from protocol.cards import (
    CARD_PATH,
    CardError,
    card_base_url,
    card_capacity,
    card_from_dict,
    card_to_dict,
    skill_ids,
    validate_card,
)
from registry import lua
from registry.errors import InvalidCard, InvalidRequest, RegistrationRefused, SpoofedCard
from registry.keys import RedisKeys
from registry.network import address_allowed, parse_networks, resolve
from registry.records import (
    AgentRecord,
    AgentState,
    Change,
    StateTransition,
    SweepReport,
    agent_state,
)
from registry.redisio import as_int, bounded_block_ms, text
from registry.sessions import SessionBroker
from registry.settings import RegistrySettings

log = logging.getLogger(__name__)

_MAX_ID_LENGTH = 256


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
        self._http = http
        self._networks = parse_networks(settings.allowed_networks)

    # -- registration -------------------------------------------------------------------

    async def register(
        self,
        card: AgentCard | dict[str, Any],
        *,
        instance_id: str | None = None,
        verify: bool = True,
    ) -> AgentRecord:
        """Register (or refresh) an instance from its card.

        Raises :class:`InvalidCard` for a malformed card, :class:`RegistrationRefused` when
        the card's host is outside ``allowed_networks`` or its card cannot be fetched, and
        :class:`SpoofedCard` when ``verify`` finds the served card differs.
        """
        parsed = _parse_card(card)
        base = card_base_url(parsed)
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if instance_id is None:
            shown = f"[{host}]" if ":" in host else host
            instance_id = f"{parsed.name}@{shown}:{port}"
        check_instance_id(instance_id)
        await self._check_host(host, port)
        wire = card_to_dict(parsed)
        if verify:
            await self._verify(wire, base)
        skills = skill_ids(parsed)
        tags = list(dict.fromkeys(tag for skill in parsed.skills for tag in skill.tags))
        capacity = card_capacity(parsed)
        card_json = _compact(wire)
        now, leased, registered_at = await lua.REGISTER(
            self.redis,
            [self.keys.agent(instance_id), self.keys.agents, self.keys.changes],
            [
                instance_id,
                card_json,
                parsed.name,
                base,
                capacity,
                _compact(skills),
                _compact(tags),
                self.keys.skill_prefix(),
                self.keys.tag_prefix(),
                self.settings.changes_maxlen,
            ],
        )
        log.info(
            "agent registered",
            extra={"instance_id": instance_id, "url": base, "skills": skills, "verified": verify},
        )
        return AgentRecord(
            id=instance_id,
            name=parsed.name,
            url=base,
            card_json=card_json,
            skills=skills,
            tags=tags,
            capacity=capacity,
            leased=int(leased),
            load=0,
            state=AgentState.HEALTHY,
            registered_at=int(registered_at),
            last_seen=int(now),
        )

    async def heartbeat(self, instance_id: str, *, load: int = 0) -> bool:
        """Mark an instance alive; False when it is unknown (register it again then)."""
        if load < 0:
            raise InvalidRequest(f"load must be >= 0 (got {load}); report in-flight tasks")
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
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hmget(self.keys.agent(instance_id), list(lua.SELECT_FIELDS))
            (seconds, micros), values = await pipe.execute()
        if values[0] is None:
            return None
        return self._record(instance_id, values, int(seconds) * 1000 + int(micros) // 1000)

    async def list(self, *, skill: str | None = None, tag: str | None = None) -> list[AgentRecord]:
        """Every registered instance in any state, optionally filtered, sorted by id."""
        records = await self._select(skill, tag, healthy_only=False)
        return sorted(records, key=lambda r: r.id)

    async def discover(
        self, skill: str | None = None, tag: str | None = None
    ) -> builtins.list[AgentRecord]:
        """Healthy instances (optionally by skill and/or tag), most free capacity first."""
        records = await self._select(skill, tag, healthy_only=True)
        records.sort(key=lambda r: (r.leased - r.capacity, r.id))
        return records

    async def _select(
        self, skill: str | None, tag: str | None, *, healthy_only: bool
    ) -> builtins.list[AgentRecord]:
        sets = []
        if skill is not None:
            sets.append(self.keys.skill(skill))
        if tag is not None:
            sets.append(self.keys.tag(tag))
        reply = await lua.SELECT(
            self.redis,
            sets or [self.keys.agents],
            [self.keys.agent_prefix(), self.settings.healthy_window_ms if healthy_only else 0],
        )
        now = int(reply[0])
        width = len(lua.SELECT_FIELDS) + 1
        return [
            self._record(text(reply[i]), reply[i + 1 : i + width], now)
            for i in range(1, len(reply), width)
        ]

    def _record(self, instance_id: str, values: Sequence[Any], now: int) -> AgentRecord:
        last_seen, capacity, leased, load, registered_at, name, url, skills, tags, card = values
        return AgentRecord(
            id=instance_id,
            name=text(name),
            url=text(url),
            card_json=text(card),
            skills=json.loads(skills),
            tags=json.loads(tags),
            capacity=as_int(capacity),
            leased=as_int(leased),
            load=as_int(load),
            state=agent_state(
                int(last_seen),
                now,
                healthy_ms=self.settings.healthy_window_ms,
                ttl_ms=self.settings.heartbeat_ttl_ms,
            ),
            registered_at=as_int(registered_at),
            last_seen=int(last_seen),
        )

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

    async def watch(
        self, last_id: str = "$", *, block_ms: int = 5000
    ) -> AsyncGenerator[Change, None]:
        """Follow the change feed after ``last_id`` (``$``: only changes from now on)."""
        if last_id == "$":
            last_id = await self._last_change_id()
        while True:
            reply = await self.redis.xread(
                {self.keys.changes: last_id},
                count=500,
                block=bounded_block_ms(self.redis, block_ms),
            )
            for entry_id, fields in stream_entries(reply):
                last_id = entry_id
                yield _change(entry_id, fields)

    async def changes(self, *, after: str = "-", count: int = 1000) -> builtins.list[Change]:
        """Entries of the change feed after ``after`` (exclusive; ``-`` from the start)."""
        start = "-" if after == "-" else f"({after}"
        entries: Any = await self.redis.xrange(self.keys.changes, min=start, count=count)
        return [_change(text(i), f) for i, f in entries]

    async def _last_change_id(self) -> str:
        last = await self.redis.xrevrange(self.keys.changes, count=1)
        return text(last[0][0]) if last else "0-0"

    # -- checks ---------------------------------------------------------------------------

    async def _check_host(self, host: str, port: int) -> None:
        try:
            addresses = await resolve(host, port, timeout_s=self.settings.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise RegistrationRefused(
                f"the card's host {host!r} does not resolve ({exc}). "
                "Advertise a host name or address the registry can resolve."
            ) from exc
        outside = [a for a in addresses if not address_allowed(a, self._networks)]
        if not addresses or outside:
            raise RegistrationRefused(
                f"the card's host {host!r} resolves to {', '.join(outside) or 'nothing'}, "
                f"outside the allowed networks {self.settings.allowed_networks}. "
                "Serve the agent on an allowed address or add its network to "
                "SCRIPTORIUM_ALLOWED_NETWORKS."
            )

    async def _verify(self, wire: dict[str, Any], base: str) -> None:
        url = base + CARD_PATH
        limit = self.settings.max_request_bytes
        try:
            async with asyncio.timeout(self.settings.card_fetch_timeout_s):
                async with self._client() as http:
                    body = await _fetch(http, url, limit, self._fetch_timeout())
        except (httpx.HTTPError, TimeoutError, _FetchError) as exc:
            reason = str(exc) or type(exc).__name__
            raise RegistrationRefused(
                f"could not fetch the agent card from {url}: {reason}. Start the agent (it "
                "must serve its card there) before registering, or register with verify=False."
            ) from exc
        try:
            served = card_to_dict(card_from_dict(json.loads(body)))
        except (ValueError, CardError) as exc:
            raise SpoofedCard(
                f"{url} does not serve a valid agent card ({exc}). Serve the card you "
                "register at that URL."
            ) from exc
        if served != wire:
            differing = sorted(
                k for k in served.keys() | wire.keys() if served.get(k) != wire.get(k)
            )
            raise SpoofedCard(
                f"the card served at {url} differs from the submitted one (fields: "
                f"{', '.join(differing)}). Register exactly the card the agent serves."
            )

    def _fetch_timeout(self) -> httpx.Timeout:
        total = self.settings.card_fetch_timeout_s
        return httpx.Timeout(total, connect=min(total, self.settings.connect_timeout_s))

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            yield client


class _FetchError(Exception):
    pass


async def _fetch(http: httpx.AsyncClient, url: str, limit: int, limits: httpx.Timeout) -> bytes:
    async with http.stream("GET", url, timeout=limits) as response:
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _FetchError(f"the card is larger than {limit} bytes")
        return bytes(body)


def _parse_card(card: AgentCard | dict[str, Any]) -> AgentCard:
    try:
        parsed = card if isinstance(card, AgentCard) else card_from_dict(card)
        validate_card(parsed)
        card_base_url(parsed)
    except CardError as exc:
        raise InvalidCard(str(exc)) from exc
    return parsed


def check_instance_id(instance_id: str) -> None:
    """Raise :class:`InvalidRequest` unless ``instance_id`` is usable as a key part."""
    if (
        not instance_id
        or len(instance_id) > _MAX_ID_LENGTH
        or any(c.isspace() or not c.isprintable() for c in instance_id)
    ):
        raise InvalidRequest(
            f"instance id {instance_id!r} is not usable: use 1-{_MAX_ID_LENGTH} printable "
            "characters without spaces"
        )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def stream_entries(reply: Any) -> builtins.list[tuple[str, dict[str, str]]]:
    """Entries of an XREAD reply on one stream (RESP2 or RESP3 shape), decoded."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [s[1] for s in reply]
    out: builtins.list[tuple[str, dict[str, str]]] = []
    for entries in streams:
        for entry_id, fields in entries:
            out.append((text(entry_id), {text(k): text(v) for k, v in fields.items()}))
    return out


def _change(entry_id: str, raw: dict[Any, Any]) -> Change:
    fields = {text(k): text(v) for k, v in raw.items()}
    return Change(
        id=entry_id,
        kind=fields.pop("kind", ""),
        instance_id=fields.pop("instance_id", None),
        session_id=fields.pop("session_id", None),
        fields=fields,
    )
