"""What the writer and the critic share at run time: the grounding model and their peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis as sync_redis

from agents.common.grounding.grounder import Grounder
from agents.common.settings import EmbeddingSettings
from agents.common.vectors import SharedVectors
from agents.scaffold.executor import SkillError
from agents.scaffold.keys import RedisKeys
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
        shared = self._shared_vectors(self._grounder)
        if shared is not None:
            self._grounder.featurizer.cache.shared = shared
        async with Peers.connect(
            self.settings, caller=self.name, request_timeout_s=self.request_timeout_s
        ) as peers:
            self._peers = peers
            try:
                yield
            finally:
                if shared is not None:
                    shared.redis.close()
        self._peers = None

    def _shared_vectors(self, grounder: Grounder) -> SharedVectors | None:
        """Vectors shared with the other grounded agents through Redis (fp32 only: int8
        vectors depend on their batch, so two processes would not agree)."""
        embedder = grounder.featurizer.cache.embedder
        if not self.settings.redis_url or embedder.backend == "onnx-int8":
            return None
        client = sync_redis.Redis.from_url(
            self.settings.redis_url,
            socket_timeout=self.settings.redis_timeout_s,
            socket_connect_timeout=self.settings.redis_timeout_s,
        )
        space = f"{embedder.name}:{embedder.backend}:{self.settings.max_seq_length}"
        return SharedVectors(client, RedisKeys(self.settings.redis_prefix), space, dim=embedder.dim)

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
