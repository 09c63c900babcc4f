"""The session broker: leases one healthy instance per role, atomically.

A session binds role names (``retriever``, ``writer``...) to agent instances. Each binding
holds one lease on the instance's capacity until the session is released or expires.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import re
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from pydantic import BaseModel, Field

from registry import lua
from registry.errors import (
    InvalidRequest,
    NoCapacity,
    RecordUnreadable,
    SessionClosed,
    SessionNotFound,
)
from registry.keys import RedisKeys
from registry.limits import (
    MAX_PAGE,
    MAX_ROLES,
    MAX_SKILL_LENGTH,
    NAME_RULE,
    SESSION_ID_RULE,
    is_name,
    is_session_id,
)
from registry.redis_client import as_int, hash_fields, opt_text, pairs, text
from registry.settings import RegistrySettings

log = logging.getLogger(__name__)

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_EXPIRE_BATCH = 100


class SessionState(StrEnum):
    """Lifecycle of a session."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"


class Session(BaseModel):
    """Roles bound to instances. Times are epoch milliseconds (Redis server clock)."""

    id: str
    roles: dict[str, str] = Field(description="Role name -> skill id.")
    bindings: dict[str, str] = Field(description="Role name -> instance id.")
    created: int
    expires: int = Field(description="Lease expiry; renew before it passes.")
    trace_id: str = Field(description="W3C trace id (32 hex digits) shared by the session.")
    state: SessionState
    ended: int | None = Field(default=None, description="When it was released or expired.")


def current_trace_id() -> str:
    """The active OpenTelemetry span's trace id, or a fresh random one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return secrets.token_hex(16)


class SessionStore:
    """What :class:`SessionBroker` and :class:`~registry.events.SessionLog` work on: a Redis
    client, the registry's settings and the key names under its prefix."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: RegistrySettings,
        *,
        keys: RedisKeys | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys or RedisKeys(settings.redis_prefix)


class SessionBroker(SessionStore):
    """Negotiates, rebinds, renews and releases sessions; every change is one Lua script."""

    async def negotiate(
        self,
        roles: Mapping[str, str],
        *,
        lease_s: float | None = None,
        trace_id: str | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Lease one healthy instance with free capacity per role (role -> skill id).

        All or nothing: raises :class:`NoCapacity` for the first role that cannot be
        served, and then nothing is leased.
        """
        if not 1 <= len(roles) <= MAX_ROLES:
            raise InvalidRequest(
                f"roles must map 1..{MAX_ROLES} roles to skills, e.g. {{'writer': 'write'}} "
                f"(got {len(roles)})"
            )
        names = builtins.list(roles)
        skills = [roles[name] for name in names]
        for name in names:
            check_role(name)
        if not all(0 < len(skill) <= MAX_SKILL_LENGTH for skill in skills):
            raise InvalidRequest(f"skill ids must be 1..{MAX_SKILL_LENGTH} characters")
        sid = session_id or secrets.token_hex(16)
        check_session_id(sid)
        trace_id = trace_id or current_trace_id()
        if not _TRACE_ID.fullmatch(trace_id) or trace_id == "0" * 32:
            raise InvalidRequest(
                f"trace_id {trace_id!r} is not a W3C trace id: use 32 lowercase hex digits, "
                "not all zero (or omit it)"
            )
        keys = self.keys
        roles_json = json.dumps(dict(roles), separators=(",", ":"))
        reply = await lua.NEGOTIATE(
            self.redis,
            [
                keys.session(sid),
                keys.sessions,
                keys.changes,
                keys.session_events(sid),
                *[keys.skill(skill) for skill in skills],
            ],
            [
                keys.agent_prefix(),
                self.settings.healthy_window_ms,
                self._lease_ms(lease_s),
                sid,
                trace_id,
                roles_json,
                self.settings.changes_maxlen,
                self.settings.events_maxlen,
                self.settings.heartbeat_ttl_ms,
                *names,
            ],
        )
        code = int(reply[0])
        if code == -1:
            raise InvalidRequest(f"session id {sid!r} is taken: pick another or omit it")
        if code == 0:
            index = int(reply[1]) - 1
            raise NoCapacity(names[index], skills[index])
        session = Session(
            id=sid,
            roles=dict(roles),
            bindings=json.loads(reply[3]),
            created=int(reply[1]),
            expires=int(reply[2]),
            trace_id=trace_id,
            state=SessionState.ACTIVE,
        )
        log.info(
            "session negotiated",
            extra={"session_id": sid, "bindings": session.bindings, "trace_id": trace_id},
        )
        return session

    async def get(self, session_id: str) -> Session:
        """The session; :class:`SessionNotFound` when unknown or past retention, and
        :class:`RecordUnreadable` when what is stored under its id is not a session."""
        check_session_id(session_id, existing=True)
        fields = hash_fields(await self.redis.hgetall(self.keys.session(session_id)))
        if not fields:
            raise SessionNotFound(session_id)
        try:
            return _session(fields)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("unreadable session record", extra={"session_id": session_id})
            raise RecordUnreadable(
                f"session {session_id!r} is stored in a form the registry cannot read ({exc}); "
                f"delete the key {self.keys.session(session_id)} or wait for its retention"
            ) from exc

    async def list(
        self, *, state: SessionState | None = None, limit: int = 1000
    ) -> builtins.list[Session]:
        """Active sessions and closed ones still retained, newest first.

        A record that cannot be read is left out (and logged), never failing the listing.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be in 1..{MAX_PAGE} (got {limit})")
        ids: builtins.list[Any] = []
        if state in (None, SessionState.ACTIVE):
            ids += await self.redis.zrange(self.keys.sessions, 0, limit - 1)
        if state in (None, SessionState.RELEASED, SessionState.EXPIRED):
            ids += await self.redis.zrevrange(self.keys.closed_sessions, 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(self.keys.session(text(sid)))
            replies = await pipe.execute()
        sessions = [
            session
            for sid, raw in zip(ids, replies, strict=True)
            if raw and (session := _readable(text(sid), hash_fields(raw))) is not None
        ]
        if state is not None:
            sessions = [s for s in sessions if s.state == state]
        sessions.sort(key=lambda s: (-s.created, s.id))
        return sessions[:limit]

    async def rebind(self, session_id: str, role: str) -> Session:
        """Move ``role`` to another healthy instance with free capacity.

        The old instance's lease is given back. Raises :class:`NoCapacity` (session
        unchanged) when no other instance can take the role.
        """
        check_session_id(session_id, existing=True)
        check_role(role)
        reply = await lua.REBIND(
            self.redis,
            [
                self.keys.session(session_id),
                self.keys.changes,
                self.keys.session_events(session_id),
            ],
            [
                self.keys.agent_prefix(),
                self.keys.skill_prefix(),
                self.settings.healthy_window_ms,
                role,
                session_id,
                self.settings.changes_maxlen,
                self.settings.events_maxlen,
                self.settings.heartbeat_ttl_ms,
            ],
        )
        code = int(reply[0])
        if code == 0:
            raise NoCapacity(role, text(reply[1]))
        self._raise_for(code, reply, session_id, role)
        session = _session(pairs(reply[1]))
        log.info(
            "session role rebound",
            extra={"session_id": session_id, "role": role, "instance_id": session.bindings[role]},
        )
        return session

    async def renew(self, session_id: str, lease_s: float | None = None) -> Session:
        """Extend the lease to ``lease_s`` (default ``session_lease_s``) from now."""
        check_session_id(session_id, existing=True)
        reply = await lua.RENEW(
            self.redis,
            [self.keys.session(session_id), self.keys.sessions],
            [self._lease_ms(lease_s), session_id],
        )
        self._raise_for(int(reply[0]), reply, session_id)
        return _session(pairs(reply[1]))

    async def release(self, session_id: str) -> None:
        """Give every lease back (once, however often it is called); keep the log for
        ``session_retention_s``."""
        check_session_id(session_id, existing=True)
        code = await lua.RELEASE(
            self.redis,
            [self.keys.sessions, self.keys.closed_sessions, self.keys.changes],
            [session_id, *self._close_args()],
        )
        if code == -1:
            raise SessionNotFound(session_id)
        if code == 1:
            log.info("session released", extra={"session_id": session_id})

    async def expire_due(self, now: int | None = None) -> builtins.list[str]:
        """Expire sessions whose lease passed by ``now`` (epoch ms; default: server time).

        Gives their leases back. Safe to run from several sweepers at once.
        """
        expired: builtins.list[str] = []
        while True:
            batch = await lua.EXPIRE_DUE(
                self.redis,
                [self.keys.sessions, self.keys.closed_sessions, self.keys.changes],
                ["" if now is None else int(now), _EXPIRE_BATCH, *self._close_args()],
            )
            expired += [text(sid) for sid in batch]
            if len(batch) < _EXPIRE_BATCH:
                break
        if expired:
            log.info("sessions expired", extra={"session_ids": expired})
        return expired

    def _close_args(self) -> builtins.list[str | int]:
        return [
            self.keys.agent_prefix(),
            self.keys.session_prefix(),
            self.keys.session_events_suffix(),
            int(self.settings.session_retention_s * 1000),
            self.settings.changes_maxlen,
            self.settings.events_maxlen,
        ]

    def _lease_ms(self, lease_s: float | None) -> int:
        lease = self.settings.session_lease_s if lease_s is None else lease_s
        longest = self.settings.max_session_lease_s
        if not (isinstance(lease, int | float) and math.isfinite(lease) and 0 < lease <= longest):
            raise InvalidRequest(
                f"lease_s must be > 0 and at most {longest:g} s (max_session_lease_s; "
                f"got {lease}); renew the session before it runs out instead"
            )
        return max(1, int(lease * 1000))

    @staticmethod
    def _raise_for(code: int, reply: Any, session_id: str, role: str | None = None) -> None:
        if code == -1:
            raise SessionNotFound(session_id)
        if code == -2:
            raise SessionClosed(session_id, text(reply[1]))
        if code == -3:
            raise InvalidRequest(
                f"session {session_id!r} has no role {role!r}: rebind one of its roles"
            )


def check_session_id(session_id: str, *, existing: bool = False) -> None:
    """Raise unless ``session_id`` is in the session id alphabet: :class:`InvalidRequest`
    for an id to create, :class:`SessionNotFound` for an ``existing`` session to look up
    (no session can have it, e.g. ``x:events``)."""
    if is_session_id(session_id):
        return
    if existing:
        raise SessionNotFound(session_id)
    raise InvalidRequest(f"session id {session_id!r} is not usable: use {SESSION_ID_RULE}")


def check_role(role: str) -> None:
    """Raise :class:`InvalidRequest` unless ``role`` is in the name alphabet."""
    if not is_name(role):
        raise InvalidRequest(f"role name {role!r} is not usable: use {NAME_RULE}")


def _session(fields: dict[str, Any]) -> Session:
    ended = opt_text(fields.get("ended"))
    return Session(
        id=text(fields["id"]),
        roles=json.loads(fields["roles"]),
        bindings=json.loads(fields["bindings"]),
        created=_ms(fields.get("created")),
        expires=_ms(fields.get("expires")),
        trace_id=text(fields.get("trace_id", "")),
        state=SessionState(text(fields["state"])),
        ended=_ms(ended) if ended else None,
    )


def _ms(value: Any) -> int:
    """A stored time as int ms. Tolerates what earlier versions could store (``1e+16``,
    ``-1.2e+19``) and clamps it to the 64-bit range instead of failing."""
    try:
        return as_int(value)
    except ValueError:
        number = float(text(value))
    if math.isnan(number):
        raise ValueError(f"not a time: {text(value)!r}")
    return int(max(-(2**63), min(2**63 - 1, number)))


def _readable(session_id: str, fields: dict[str, Any]) -> Session | None:
    """The session, or None (logged) when its record cannot be read."""
    try:
        return _session(fields)
    except (KeyError, ValueError, TypeError) as exc:
        log.warning(
            "unreadable session record skipped", extra={"session_id": session_id, "error": str(exc)}
        )
        return None
