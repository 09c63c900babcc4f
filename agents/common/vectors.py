"""Embeddings shared between processes through Redis.

The writer embeds the passages while the model writes; the critic then checks the same
sentences against the same passages. fp32 vectors do not depend on what else was in their
batch, so a vector one process computed is the one another would compute: sharing them lets
the critic skip most of its embedding. Best effort: when Redis fails, each process embeds
for itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence

import redis as sync_redis
from redis.exceptions import RedisError

from protocol.extras import extra

with extra("retrieval", feature="sharing embeddings between agents"):
    import numpy as np

from agents.common.embedding import Vectors
from agents.scaffold.keys import RedisKeys

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 600


class SharedVectors:
    """Vectors by text in Redis under one vector space (model, backend, sequence length)."""

    def __init__(
        self,
        redis: sync_redis.Redis,
        keys: RedisKeys,
        space: str,
        *,
        dim: int,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.space = space
        self.dim = dim
        self.ttl_s = ttl_s

    def _key(self, text: str) -> str:
        return self.keys.vector(self.space, hashlib.sha1(text.encode()).hexdigest())  # noqa: S324

    def get_many(self, texts: Sequence[str]) -> dict[str, Vectors]:
        """The vectors Redis holds for ``texts`` (missing ones are left out)."""
        if not texts:
            return {}
        try:
            values = self.redis.mget([self._key(t) for t in texts])
        except (RedisError, OSError) as exc:
            log.warning("shared vectors unavailable", extra={"error": repr(exc)})
            return {}
        found: dict[str, Vectors] = {}
        for text, value in zip(texts, values, strict=True):
            if isinstance(value, bytes) and len(value) == 4 * self.dim:
                found[text] = np.frombuffer(value, dtype=np.float32).copy()
        return found

    def put_many(self, vectors: Mapping[str, Vectors]) -> None:
        """Store ``vectors`` for ``ttl_s`` seconds."""
        if not vectors:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for text, vector in vectors.items():
                    blob = np.asarray(vector, dtype=np.float32).tobytes()
                    pipe.set(self._key(text), blob, ex=self.ttl_s)
                pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("shared vectors not stored", extra={"error": repr(exc)})
