"""What the writer and the critic share at run time: the grounding model and their peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from agents.common.grounding import Grounder
from agents.common.settings import EmbeddingSettings
from agents.scaffold.executor import SkillError
from agents.scaffold.peers import Peers


class GroundedAgent:
    """Loads the grounding model and connects to the registry in the agent's lifespan."""

    name = "agent"

    def __init__(self, settings: EmbeddingSettings, *, request_timeout_s: float | None = None):
        self.settings = settings
        self.request_timeout_s = request_timeout_s
        self._grounder: Grounder | None = None
        self._peers: Peers | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self._grounder = await asyncio.to_thread(Grounder.load, self.settings)
        async with Peers.connect(
            self.settings, caller=self.name, request_timeout_s=self.request_timeout_s
        ) as peers:
            self._peers = peers
            yield
        self._peers = None

    @property
    def grounder(self) -> Grounder:
        if self._grounder is None:
            raise SkillError(f"the {self.name} is still starting; try again in a moment")
        return self._grounder

    @property
    def peers(self) -> Peers:
        if self._peers is None:
            raise SkillError(f"the {self.name} is still starting; try again in a moment")
        return self._peers
