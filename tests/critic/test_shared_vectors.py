"""Vectors the writer computed are reused by the critic through Redis (real Valkey)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import redis as sync_redis

from agents.common.embedding import Embedder, Vectors
from agents.common.grounding.grounder import Grounder
from agents.common.grounding.model import model_dir
from agents.common.settings import EmbeddingSettings
from agents.common.vectors import SharedVectors
from agents.critic.training.train import train
from registry.keys import RedisKeys

PASSAGES = [
    "Sputnik 1 was the first artificial Earth satellite. The Soviet Union launched it on "
    "4 October 1957. It orbited for three weeks before its batteries died.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889.",
]


@dataclass
class Counting:
    """The real embedder, counting the texts it is asked to embed."""

    inner: Embedder
    texts: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def settings() -> EmbeddingSettings:
    settings = EmbeddingSettings()
    train(settings)  # idempotent: `make model` has trained it already
    return settings


@pytest.fixture
def shared_client(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


def grounder(settings: EmbeddingSettings, store: SharedVectors | None) -> tuple[Grounder, Counting]:
    embedder = Counting(settings.load_embedder(settings.grounding_embedder))
    loaded = Grounder.from_dir(model_dir(settings.resolved_model_cache_dir), embedder)  # type: ignore[arg-type]
    loaded.featurizer.cache.shared = store
    return loaded, embedder


def test_the_critic_reuses_what_the_writer_embedded(
    settings: EmbeddingSettings, shared_client: sync_redis.Redis, redis_prefix: str
) -> None:
    def store() -> SharedVectors:
        return SharedVectors(shared_client, RedisKeys(redis_prefix), "test-space", dim=384)

    writer, _ = grounder(settings, store())
    critic, critic_embedder = grounder(settings, store())
    alone, _ = grounder(settings, None)
    claim = "The Soviet Union launched Sputnik 1 in 1957."
    writer.prepare(PASSAGES)
    writer.support([claim], PASSAGES, "Who launched Sputnik 1?")
    shared_scores = critic.support([claim], PASSAGES, "Who launched Sputnik 1?")
    assert critic_embedder.texts == []  # everything came from Redis
    own_scores = alone.support([claim], PASSAGES, "Who launched Sputnik 1?")
    assert [s.score for s in shared_scores[0]] == pytest.approx([s.score for s in own_scores[0]])


def test_redis_going_away_only_costs_time(settings: EmbeddingSettings) -> None:
    dead = sync_redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    critic, embedder = grounder(
        settings, SharedVectors(dead, RedisKeys("gone"), "test-space", dim=384)
    )
    rows = critic.support(["Sputnik 1 was launched in 1957."], PASSAGES, "When?")
    assert rows[0][0].score >= critic.threshold
    assert embedder.texts  # embedded locally instead
