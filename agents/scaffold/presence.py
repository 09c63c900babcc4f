"""Self-registration: register the card once the server answers, heartbeat, deregister.

The loop never gives up and never storms: while Redis or the card check fails it retries
once per heartbeat interval, and when a heartbeat finds its record gone (Redis restarted,
or the registry pruned it) it registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx
from a2a.types import AgentCard
from redis.exceptions import RedisError

from agents.scaffold import metrics
from protocol.cards import CARD_PATH, card_base_url
from registry.directory import Registry
from registry.errors import RegistryError

log = logging.getLogger(__name__)
NOT_READY_POLL_S = 0.2


class Presence:
    """Keeps one agent instance registered while it runs."""

    def __init__(
        self,
        registry: Registry,
        card: AgentCard,
        *,
        instance_id: str | None,
        interval_s: float,
        load: Callable[[], int],
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.card = card
        self.instance_id = instance_id
        self.interval_s = interval_s
        self.load = load
        self.ready = ready or (lambda: True)
        self.registered = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background loop."""
        self._task = asyncio.create_task(self._run(), name=f"presence:{self.card.name}")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop heartbeating and deregister (best effort, bounded by ``timeout_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.registered and self.instance_id:
            try:
                await asyncio.wait_for(self.registry.deregister(self.instance_id), timeout_s)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("deregistration failed", extra={"error": str(exc)})
        self.registered = False
        metrics.REGISTERED.labels(self.card.name).set(0)

    async def _withdraw(self) -> None:
        """Not ready (anymore): leave the registry so nobody is routed here."""
        if not self.registered:
            return
        log.warning("not ready; leaving the registry until ready again")
        self.registered = False
        metrics.REGISTERED.labels(self.card.name).set(0)
        try:
            await self.registry.deregister(self.instance_id or "")
        except (RedisError, OSError) as exc:
            log.warning("deregistration failed", extra={"error": str(exc)})

    async def _wait_until_served(self) -> None:
        url = card_base_url(self.card) + CARD_PATH
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        await self._wait_until_served()
        failing = False
        while True:
            if not self.ready():
                await self._withdraw()
                await asyncio.sleep(min(self.interval_s, NOT_READY_POLL_S))
                continue
            try:
                if not self.registered:
                    record = await self.registry.register(self.card, instance_id=self.instance_id)
                    self.instance_id = record.id
                    self.registered = True
                    log.info("registered", extra={"instance_id": record.id})
                elif not await self.registry.heartbeat(self.instance_id or "", load=self.load()):
                    log.warning("registry lost this instance; registering again")
                    self.registered = False
                    continue
                metrics.REGISTERED.labels(self.card.name).set(1)
                if failing:
                    log.info("registry reachable again", extra={"instance_id": self.instance_id})
                failing = False
            except (RedisError, OSError, RegistryError) as exc:
                metrics.REGISTERED.labels(self.card.name).set(0)
                if not failing:
                    log.warning(
                        "cannot reach the registry; retrying every %.1fs",
                        self.interval_s,
                        extra={"error": str(exc)},
                    )
                failing = True
            await asyncio.sleep(self.interval_s)
