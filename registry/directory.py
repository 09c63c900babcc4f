"""The agent registry: registration, heartbeats, discovery, liveness sweeps, change feed."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
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
from protocol.signing import UNKNOWN_KEY, UNSIGNED, CardKey, CardSignatureError, verify_card
from registry import lua
from registry.errors import (
    InstanceConflict,
    InvalidCard,
    InvalidRequest,
    RegistrationRefused,
    SpoofedCard,
    UntrustedCard,
)
from registry.keys import RedisKeys
from registry.limits import (
    INSTANCE_ID_RULE,
    MAX_CAPACITY,
    MAX_LOAD,
    MAX_PAGE,
    NAME_RULE,
    default_instance_id,
    is_instance_id,
    is_name,
    is_stream_id,
)
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

if TYPE_CHECKING:
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
        self._http = http
        self._networks = parse_networks(settings.allowed_networks)
        self._trusted = settings.trusted_keys()

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
        parsed = _parse_card(card)
        base, host, port = _endpoint(parsed)
        if instance_id is None:
            instance_id = default_instance_id(parsed.name, host, port)
        check_instance_id(instance_id)
        capacity = _capacity(parsed)
        await self._check_host(host, port)
        signer = self._check_signature(parsed, base)
        wire = card_to_dict(parsed)
        if verify:
            await self._verify(wire, base)
        skills = skill_ids(parsed)
        tags = list(dict.fromkeys(tag for skill in parsed.skills for tag in skill.tags))
        card_json = _compact(wire)
        binding = binding_of(parsed, base, signer)
        reply = await lua.REGISTER(
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
                binding,
                self.settings.heartbeat_ttl_ms,
            ],
        )
        if int(reply[0]) == -1:
            bound_to = text(reply[1])
            log.warning(
                "registration refused: instance id held by a live instance",
                extra={"instance_id": instance_id, "url": base, "bound_to": bound_to},
            )
            raise InstanceConflict(instance_id, bound_to, binding)
        _, now, leased, registered_at = reply
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
        self, last_id: str = "$", *, block_ms: int = 5000, hub: StreamHub | None = None
    ) -> AsyncGenerator[Change, None]:
        """Follow the change feed after ``last_id`` (``$``: only changes from now on).

        Without ``hub`` this holds one pooled connection in a blocking read for as long as
        it follows; with a :class:`~registry.streams.StreamHub` (the HTTP API) it holds none.
        """
        if last_id == "$":
            last_id = await self._last_change_id()
        else:
            check_stream_id(last_id)
        if hub is not None:
            batches = hub.entries(self.keys.changes, last_id, idle_ms=block_ms)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    for entry_id, fields in batch:
                        yield _change(entry_id, fields)
            return
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
        check_count(count)
        if after != "-":
            check_stream_id(after)
        start = "-" if after == "-" else f"({after}"
        entries: Any = await self.redis.xrange(self.keys.changes, min=start, count=count)
        return [_change(text(i), f) for i, f in entries]

    async def _last_change_id(self) -> str:
        last = await self.redis.xrevrange(self.keys.changes, count=1)
        return text(last[0][0]) if last else "0-0"

    # -- checks ---------------------------------------------------------------------------

    def _check_signature(self, card: AgentCard, base: str) -> CardKey | None:
        """The trusted key that signed ``card``, None when it is admitted unverified.

        With ``require_signed_cards`` only a card signed by a trusted key is admitted.
        Without, an unsigned card or one signed by a key the registry does not know is
        admitted (bound to its URL only), but a signature by a trusted key must verify: a
        card changed after signing is refused either way.
        """
        required = self.settings.require_signed_cards
        if self._trusted is None:
            return None  # require_signed_cards needs trusted keys (settings check)
        try:
            return verify_card(card, self._trusted)
        except CardSignatureError as exc:
            if not required and exc.reason in (UNSIGNED, UNKNOWN_KEY):
                log.info("card admitted unverified", extra={"url": base, "reason": exc.reason})
                return None
            log.warning(
                "card signature refused",
                extra={"url": base, "reason": exc.reason, "error": str(exc)},
            )
            raise UntrustedCard(exc.reason, str(exc)) from exc

    async def _check_host(self, host: str, port: int) -> None:
        try:
            addresses = await resolve(host, port, timeout_s=self.settings.connect_timeout_s)
            error = None
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not IDNA-encodable
            addresses, error = [], str(exc) or type(exc).__name__
        outside = [a for a in addresses if not address_allowed(a, self._networks)]
        if addresses and not outside:
            return
        # One answer whether the name does not resolve or resolves elsewhere: the registry
        # does not tell callers what internal names resolve to. The log has it.
        log.warning(
            "card host refused",
            extra={"host": host, "addresses": addresses, "outside": outside, "error": error},
        )
        raise RegistrationRefused(
            f"the card's host {host!r} does not resolve to addresses inside the allowed "
            f"networks {self.settings.allowed_networks}. Serve the agent on an allowed address "
            "(one the registry can resolve) or add its network to SCRIPTORIUM_ALLOWED_NETWORKS; "
            "the registry's log has what the host resolved to."
        )

    async def _verify(self, wire: dict[str, Any], base: str) -> None:
        url = base + CARD_PATH
        limit = self.settings.max_request_bytes
        try:
            async with asyncio.timeout(self.settings.card_fetch_timeout_s):
                async with self._client() as http:
                    body = await _fetch(http, url, limit, self._fetch_timeout())
            served = card_to_dict(card_from_dict(json.loads(body)))
        except (httpx.HTTPError, TimeoutError, _FetchError, ValueError, CardError) as exc:
            # One answer for every kind of failure: saying what does listen at the address
            # (refused, timed out, not HTTP, not a card) would make the registry a port
            # scanner. The reason goes to the log.
            log.warning(
                "card verification failed",
                extra={"url": url, "error": str(exc) or type(exc).__name__},
            )
            raise RegistrationRefused(
                f"could not fetch a valid agent card from {url}. Start the agent (it must "
                "serve the card it registers there) before registering; the registry's log "
                "has the reason."
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
    except (ValueError, TypeError) as exc:  # e.g. a string protobuf cannot encode
        raise InvalidCard(f"not an A2A v1.0 agent card: {exc}") from exc
    if not is_name(parsed.name):
        raise InvalidCard(
            f"card.name {parsed.name!r} is not usable as an agent name: use {NAME_RULE}"
        )
    return parsed


def _endpoint(card: AgentCard) -> tuple[str, str, int]:
    """The card's base URL, host and port; :class:`InvalidCard` when they do not parse."""
    base = card_base_url(card)
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidCard(f"the card's URL {base!r} does not parse ({exc})") from exc
    return base, host, port


def _capacity(card: AgentCard) -> int:
    try:
        capacity = card_capacity(card)
    except (ValueError, OverflowError) as exc:  # nan, inf
        raise InvalidCard(f"capacity (max_sessions) is not a number ({exc})") from exc
    if not 1 <= capacity <= MAX_CAPACITY:
        raise InvalidCard(f"capacity (max_sessions) must be in 1..{MAX_CAPACITY} (got {capacity})")
    return capacity


def binding_of(card: AgentCard, base: str, signer: CardKey | None = None) -> str:
    """What an instance id is bound to: only a registration with the same binding may
    replace a live record under that id.

    The card's base URL; for a card whose signature the registry verified, the URL and the
    signing key's RFC 7638 thumbprint (``{base}#key={thumbprint}``), so that taking over a
    live id needs both the address and the key (a re-registration signed by another key,
    or unsigned, is refused with 409). Records stored before a binding existed are compared
    by their URL.
    """
    del card  # the binding depends on where the card is served and who signed it
    return base if signer is None else f"{base}#key={signer.thumbprint}"


def check_instance_id(instance_id: str) -> None:
    """Raise :class:`InvalidRequest` unless ``instance_id`` is in the instance id alphabet."""
    if not is_instance_id(instance_id):
        raise InvalidRequest(
            f"instance id {instance_id!r} is not usable: use {INSTANCE_ID_RULE} "
            "(set SCRIPTORIUM_INSTANCE_ID, or let the registry derive name@host-port)"
        )


def check_stream_id(stream_id: str) -> None:
    """Raise :class:`InvalidRequest` unless ``stream_id`` is an id to resume after."""
    if not is_stream_id(stream_id):
        raise InvalidRequest(
            f"{stream_id!r} is not a stream id: pass the `id` of the last event you received "
            "(ms or ms-seq, digits only)"
        )


def check_count(count: int) -> None:
    """Raise :class:`InvalidRequest` unless ``count`` is in 1..``MAX_PAGE``."""
    if not 1 <= count <= MAX_PAGE:
        raise InvalidRequest(f"count must be in 1..{MAX_PAGE} (got {count})")


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
