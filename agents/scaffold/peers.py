"""Reaching other agents: discovery, one A2A client per instance, sessions, typed calls.

Written once for every caller. :class:`Peers` finds instances by skill (through the registry
on Redis, or its HTTP discovery endpoint for processes without Redis), keeps one A2A client
per instance built from its registered card (no card fetch per call), and calls skills with
typed results. :meth:`Peers.session` negotiates a session (one instance per role), renews
its lease, rebinds a role whose instance died and retries that step once, logs every
exchange with its timing to the session's event log, and releases the session however the
block ends (also on error and cancel). :meth:`Peers.join` lets an agent called inside a
session use the instances bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any, Protocol, TypeVar

import grpc
import httpx
from a2a.client import Client
from a2a.types import GetExtendedAgentCardRequest, StreamResponse, Task
from a2a.utils.errors import A2AError
from pydantic import BaseModel

from agents.scaffold.executor import SkillError
from protocol.cards import card_from_dict
from protocol.client import (
    NotDelivered,
    SkillFailed,
    UpdateCallback,
    call_skill,
    http_client,
    is_unreachable,
)
from protocol.client import open_client as open_a2a_client
from protocol.settings import CommonSettings
from protocol.signing import CardSignatureError, CardTrustSettings, TrustedKeys
from registry.client import RegistryClient
from registry.directory import Registry
from registry.errors import NoCapacity, RegistryError, SessionNotFound
from registry.events import SessionLog
from registry.records import AgentRecord
from registry.redis_client import redis_client
from registry.sessions import Session, SessionBroker, check_session_id
from registry.settings import RegistrySettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
#: How many instances one call tries when those before could not be connected to.
MAX_INSTANCES_TRIED = 4


class Directory(Protocol):
    """Where agent records are read: :class:`Registry` (Redis) or :class:`RegistryClient`."""

    async def discover(
        self, skill: str | None = None, tag: str | None = None
    ) -> list[AgentRecord]: ...

    async def get(self, instance_id: str) -> AgentRecord | None: ...


class PeerUnavailable(SkillError):
    """No healthy instance could do the step; the message names the agent and what to do."""


class Peers:
    """Discovery, cached A2A clients and typed skill calls for one process."""

    def __init__(
        self,
        directory: Directory,
        http: httpx.AsyncClient,
        *,
        caller: str,
        broker: SessionBroker | None = None,
        events: SessionLog | None = None,
        trusted_keys: TrustedKeys | None = None,
    ) -> None:
        self.directory = directory
        self.trusted_keys = trusted_keys  # set: a peer's card must be signed by one of them
        self.http = http
        self.caller = caller
        self.broker = broker
        self.events = events
        self._clients: dict[tuple[str, str], Client] = {}
        #: Skill ids of each instance's authenticated extended card, by (id, public card).
        self._private_skills: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, settings: CommonSettings, *, caller: str, request_timeout_s: float | None = None
    ) -> AsyncIterator[Peers]:
        """Peers over the registry in Redis (agents): discovery and sessions."""
        redis = redis_client(settings)
        registry_settings = RegistrySettings(**settings.model_dump())
        try:
            async with _http(settings, request_timeout_s) as http:
                yield cls(
                    Registry(redis, registry_settings),
                    http,
                    caller=caller,
                    broker=SessionBroker(redis, registry_settings),
                    events=SessionLog(redis, registry_settings),
                    trusted_keys=registry_settings.trusted_keys(),
                )
        finally:
            await redis.aclose()

    @classmethod
    @contextlib.asynccontextmanager
    async def over_http(
        cls,
        settings: CommonSettings,
        *,
        caller: str = "cli",
        registry_url: str | None = None,
        request_timeout_s: float | None = None,
    ) -> AsyncIterator[Peers]:
        """Peers over the registry's HTTP discovery endpoint (the CLI): discovery only."""
        async with _http(settings, request_timeout_s) as http:
            url = registry_url or settings.resolved_registry_url
            trusted = CardTrustSettings(**settings.model_dump()).trusted_keys()
            yield cls(RegistryClient(url, http), http, caller=caller, trusted_keys=trusted)

    async def find(self, skill: str, *, passing_over: Collection[str] = ()) -> AgentRecord:
        """The healthy instance offering ``skill`` with the most free capacity.

        Instances whose ids are in ``passing_over`` (found unreachable) are not chosen.
        """
        try:
            records = await self.directory.discover(skill)
        except RegistryError as exc:
            raise PeerUnavailable(str(exc)) from exc
        if not records:
            records = await self._offering_privately(skill)
        reachable = [r for r in records if r.id not in passing_over]
        if not reachable and passing_over:
            raise PeerUnavailable(
                f"no agent offering skill {skill!r} could be reached "
                f"(connection failed: {', '.join(passing_over)}); is it running? "
                "(`scriptorium agents` lists what is registered)"
            )
        if not reachable:
            raise PeerUnavailable(
                f"no healthy agent offers skill {skill!r}; is it running? "
                "(`scriptorium agents` lists what is registered)"
            )
        return reachable[0]

    async def _offering_privately(self, skill: str) -> list[AgentRecord]:
        """Healthy instances whose authenticated extended card (not the public one, which
        the registry indexes) lists ``skill``: operator-only skills such as ``ingest``."""
        try:
            records = await self.directory.discover()
        except RegistryError as exc:
            raise PeerUnavailable(str(exc)) from exc
        found = []
        for record in records:
            if not record.card.get("capabilities", {}).get("extendedAgentCard"):
                continue
            key = (record.id, record.card_json)
            skills = self._private_skills.get(key)
            if skills is None:  # fetched once per instance and card, not per call
                try:
                    client = await self.client(record)
                    card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
                except (A2AError, httpx.HTTPError, grpc.aio.AioRpcError) as exc:
                    log.debug(
                        "no extended card", extra={"instance_id": record.id, "error": str(exc)}
                    )
                    continue
                skills = self._private_skills[key] = frozenset(s.id for s in card.skills)
            if skill in skills:
                found.append(record)
        return found

    async def client(self, record: AgentRecord) -> Client:
        """The A2A client of one instance, built once from its registered card."""
        key = (record.id, record.card_json)
        client = self._clients.get(key)
        if client is None:
            try:
                client = await open_a2a_client(
                    card_from_dict(record.card), self.http, trusted_keys=self.trusted_keys
                )
            except CardSignatureError as exc:
                raise PeerUnavailable(f"agent {record.id!r} is not trusted: {exc}") from exc
            self._clients[key] = client
        return client

    async def call(
        self,
        skill: str,
        payload: BaseModel,
        *,
        result: type[M],
        record: AgentRecord | None = None,
        context_id: str | None = None,
        on_update: UpdateCallback | None = None,
    ) -> M:
        """Call ``skill`` on ``record``, or on the best instance offering it.

        Without ``record``, an instance that cannot be connected to (stopped, not yet
        deregistered) is passed over for the next best: the request never reached it.
        """
        if record is not None:
            return await self._call_on(record, skill, payload, result, context_id, on_update)
        unreachable: list[str] = []
        for _ in range(MAX_INSTANCES_TRIED):
            record = await self.find(skill, passing_over=unreachable)
            try:
                return await self._call_on(record, skill, payload, result, context_id, on_update)
            except NotDelivered as exc:
                log.warning(
                    "instance unreachable; trying the next",
                    extra={"instance_id": record.id, "error": str(exc)},
                )
                unreachable.append(record.id)
        raise PeerUnavailable(
            f"none of {len(unreachable)} instances offering skill {skill!r} could be reached "
            f"({', '.join(unreachable)}); check them with `scriptorium agents`"
        )

    async def _call_on(
        self,
        record: AgentRecord,
        skill: str,
        payload: BaseModel,
        result: type[M],
        context_id: str | None,
        on_update: UpdateCallback | None,
    ) -> M:
        client = await self.client(record)

        async def reconnect() -> Client:
            return await self.client(await self._replica(record, skill))

        return await call_skill(
            client,
            skill,
            payload,
            result=result,
            context_id=context_id,
            on_update=on_update,
            reconnect=reconnect,
        )

    async def _replica(self, record: AgentRecord, skill: str) -> AgentRecord:
        """Where to resume a task of ``record``: another healthy replica, else itself."""
        try:
            records = await self.directory.discover(skill)
        except RegistryError:
            return record
        replicas = [r for r in records if r.name == record.name]
        others = [r for r in replicas if r.id != record.id]
        return (others or replicas or [record])[0]

    @contextlib.asynccontextmanager
    async def session(
        self, roles: Mapping[str, str], *, lease_s: float | None = None
    ) -> AsyncIterator[TeamSession]:
        """Negotiate one instance per role (role -> skill); renew; always release."""
        broker = self._require_broker()
        try:
            session = await broker.negotiate(roles, lease_s=lease_s)
        except NoCapacity as exc:
            raise PeerUnavailable(
                f"cannot start a session: {exc}. Every instance is busy or down: retry in a "
                "few seconds, or add capacity (SCRIPTORIUM_CAPACITY, more replicas); "
                "`scriptorium agents` shows what is registered."
            ) from exc
        team = TeamSession(self, session)
        renew = asyncio.create_task(team.keep_alive(lease_s or broker.settings.session_lease_s))
        try:
            yield team
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(RegistryError, OSError, TimeoutError):
                await asyncio.shield(broker.release(session.id))

    async def join(self, session_id: str) -> TeamSession | None:
        """The session an incoming request belongs to (its contextId), if it is one."""
        if self.broker is None or not session_id:
            return None
        try:
            check_session_id(session_id)
            session = await self.broker.get(session_id)
        except (SessionNotFound, RegistryError):
            return None
        return TeamSession(self, session)

    def _require_broker(self) -> SessionBroker:
        if self.broker is None:
            raise RuntimeError("sessions need Peers.connect (Redis), not Peers.over_http")
        return self.broker


class TeamSession:
    """One negotiated session: calls go to the instance bound to each role."""

    def __init__(self, peers: Peers, session: Session) -> None:
        self.peers = peers
        self.session = session

    @property
    def id(self) -> str:
        return self.session.id

    async def call(
        self,
        role: str,
        payload: BaseModel,
        *,
        result: type[M],
        on_update: UpdateCallback | None = None,
    ) -> M:
        """Call the role's skill on its bound instance; rebind and retry once if it died.

        Raises :class:`PeerUnavailable` naming the role when no instance can do it, and
        :class:`SkillFailed` when the instance answered but the task did not complete.
        """
        skill = self.session.roles[role]
        for attempt in (1, 2):
            record = await self._bound(role)
            if record is not None:
                started = time.perf_counter()
                await self.note(f"{skill}.request", recipient=record.id, payload=_dump(payload))
                observe = _TaskIdTap(on_update)
                try:
                    answer = await self.peers.call(
                        skill,
                        payload,
                        result=result,
                        record=record,
                        context_id=self.id,
                        on_update=observe,
                    )
                except Exception as exc:
                    # A task whose instance died (orphaned) counts as unreachable: rebind.
                    if isinstance(exc, SkillFailed) and not exc.orphaned:
                        await self.note(
                            f"{skill}.failed",
                            recipient=record.id,
                            summary=str(exc),
                            payload={"ms": _ms(started)},
                            task_id=exc.task.id or observe.task_id,
                        )
                        raise
                    if not is_unreachable(exc):
                        raise
                    await self.note(
                        f"{skill}.unreachable",
                        recipient=record.id,
                        summary=f"{type(exc).__name__}: {exc}",
                        payload={"ms": _ms(started), "attempt": attempt},
                    )
                    log.warning(
                        "peer unreachable",
                        extra={"session_id": self.id, "role": role, "instance": record.id},
                    )
                else:
                    body = _dump(answer)
                    body["ms"] = _ms(started)
                    await self.note(
                        f"{skill}.result",
                        recipient=record.id,
                        payload=body,
                        task_id=observe.task_id,
                    )
                    return answer
            if attempt == 1 and not await self._rebind(role):
                break
        bound = self.session.bindings.get(role, "none")
        raise PeerUnavailable(
            f"the {role} agent ({bound}) is unreachable and no other healthy {role} has "
            f"capacity; start one (`scriptorium agent {role}`) and ask again"
        )

    async def note(
        self,
        kind: str,
        *,
        recipient: str = "",
        payload: dict[str, Any] | None = None,
        summary: str | None = None,
        task_id: str | None = None,
    ) -> None:
        """Append an event to the session's log (best effort: a log outage is logged)."""
        events = self.peers.events
        if events is None:
            return
        try:
            await events.append(
                self.id,
                sender=self.peers.caller,
                recipient=recipient or self.peers.caller,
                kind=kind,
                task_id=task_id,
                payload=payload,
                summary=summary,
            )
        except (RegistryError, OSError) as exc:
            log.warning(
                "session log write failed", extra={"session_id": self.id, "error": str(exc)}
            )

    async def keep_alive(self, lease_s: float) -> None:
        """Renew the lease every third of it until cancelled."""
        broker = self.peers._require_broker()
        while True:
            await asyncio.sleep(max(1.0, lease_s / 3))
            try:
                self.session = await broker.renew(self.id, lease_s)
            except (RegistryError, OSError) as exc:
                log.warning(
                    "lease renewal failed", extra={"session_id": self.id, "error": str(exc)}
                )

    async def _bound(self, role: str) -> AgentRecord | None:
        instance = self.session.bindings.get(role)
        if instance is None:
            raise PeerUnavailable(f"session {self.id} has no role {role!r}")
        record = await self.peers.directory.get(instance)
        if record is None or record.state == "offline":
            return None
        return record

    async def _rebind(self, role: str) -> bool:
        broker = self.peers.broker
        if broker is None:
            return False
        try:  # the broker logs session.rebound itself
            self.session = await broker.rebind(self.id, role)
        except (NoCapacity, RegistryError) as exc:
            await self.note("session.rebind_failed", summary=f"{role}: {exc}")
            return False
        return True


class _TaskIdTap:
    """An update callback that remembers the remote task's id, then passes the event on."""

    def __init__(self, on_update: UpdateCallback | None) -> None:
        self.on_update = on_update
        self.task_id: str | None = None

    async def __call__(self, event: StreamResponse, task: Task) -> None:
        self.task_id = self.task_id or task.id or None
        if self.on_update is not None:
            await self.on_update(event, task)


@contextlib.asynccontextmanager
async def _http(
    settings: CommonSettings, request_timeout_s: float | None
) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(
        connect_timeout_s=settings.connect_timeout_s,
        request_timeout_s=request_timeout_s or settings.request_timeout_s,
        headers=settings.auth_headers(),
    ) as http:
        yield http


def _dump(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
