"""A client of the registry's HTTP discovery endpoint, for processes without Redis (the CLI).

It answers the same reads as :class:`registry.Registry` (``discover``, ``get``), so code
that only finds agents works against either.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator

import httpx

from registry.errors import RegistryError
from registry.events import SessionEvent
from registry.records import AgentRecord
from registry.sessions import Session


class RegistryUnreachable(RegistryError):
    """The discovery endpoint did not answer; the message says where and what to do."""


class RegistryClient:
    """Reads agent records, sessions and session logs from a running registry over HTTP."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self.http = http

    async def discover(
        self, skill: str | None = None, tag: str | None = None
    ) -> builtins.list[AgentRecord]:
        """Healthy instances (optionally by skill and/or tag), most free capacity first."""
        params = {k: v for k, v in (("skill", skill), ("tag", tag)) if v}
        params["healthy_only"] = "true"
        return [AgentRecord.model_validate(r) for r in await self._list("/agents", params)]

    async def list(
        self, *, skill: str | None = None, tag: str | None = None
    ) -> builtins.list[AgentRecord]:
        """Every registered instance in any state, optionally filtered."""
        params = {k: v for k, v in (("skill", skill), ("tag", tag)) if v}
        return [AgentRecord.model_validate(r) for r in await self._list("/agents", params)]

    async def get(self, instance_id: str) -> AgentRecord | None:
        """One instance's record, or None when it is not registered."""
        try:
            return AgentRecord.model_validate(await self._get(f"/agents/{instance_id}", {}))
        except _NotFound:
            return None

    async def sessions(self, *, state: str | None = None) -> builtins.list[Session]:
        """Active sessions and closed ones still retained, newest first."""
        params = {"state": state} if state else {}
        return [Session.model_validate(s) for s in await self._list("/sessions", params)]

    async def session(self, session_id: str) -> Session | None:
        """One session, or None when it is unknown (or no longer retained)."""
        try:
            return Session.model_validate(await self._get(f"/sessions/{session_id}", {}))
        except _NotFound:
            return None

    async def session_events(self, session_id: str) -> builtins.list[SessionEvent] | None:
        """The session's whole event log as recorded so far, or None when there is none."""
        events: builtins.list[SessionEvent] = []
        async for event in self.follow_session(session_id, follow=False):
            events.append(event)
        if events or await self.session(session_id) is not None:
            return events
        return None

    async def follow_session(
        self, session_id: str, *, follow: bool = True
    ) -> AsyncIterator[SessionEvent]:
        """The session's events from the start, then (``follow``) live until it closes.

        An unknown session yields nothing.
        """
        url = f"{self.url}/sessions/{session_id}/events"
        params = {"follow": "true" if follow else "false"}
        timeout = httpx.Timeout(self.http.timeout.connect, read=None) if follow else None
        try:
            async with self.http.stream(
                "GET", url, params=params, timeout=timeout or self.http.timeout
            ) as response:
                if response.status_code == 404:
                    return
                if response.status_code >= 400:
                    body = (await response.aread()).decode(errors="replace")
                    raise RegistryUnreachable(
                        f"the registry at {self.url} answered {response.status_code}: {body[:300]}"
                    )
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        yield SessionEvent.model_validate_json(line.removeprefix("data:").strip())
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"cannot reach the registry at {self.url} ({exc!r}); start the stack with "
                "`scriptorium up` or set SCRIPTORIUM_REGISTRY_URL"
            ) from exc

    async def _list(self, path: str, params: dict[str, str]) -> builtins.list[object]:
        body = await self._get(path, params)
        if not isinstance(body, list):
            raise RegistryUnreachable(f"{self.url}{path} did not answer a list: is it a registry?")
        return body

    async def _get(self, path: str, params: dict[str, str]) -> object:
        url = self.url + path
        try:
            response = await self.http.get(url, params=params)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"cannot reach the registry at {self.url} ({exc!r}); start the stack with "
                "`scriptorium up` or set SCRIPTORIUM_REGISTRY_URL"
            ) from exc
        if response.status_code == 404:
            raise _NotFound(path)
        if response.status_code >= 400:
            raise RegistryUnreachable(
                f"the registry at {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()


class _NotFound(Exception):
    pass
