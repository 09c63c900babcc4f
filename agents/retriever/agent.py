"""The retriever's card and skills."""

from __future__ import annotations

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import not_built
from agents.scaffold.settings import AgentSettings
from protocol.cards import CardSpec, Skill

CARD = CardSpec(
    name="retriever",
    description="Owns the shared document store: ingests documents and runs hybrid search.",
    capacity=32,
    skills=[
        Skill(
            id="search",
            name="Search passages",
            description="Hybrid BM25 + vector search with metadata filters (SearchRequest).",
            tags=["retrieval", "search", "hybrid"],
            examples=['{"query": "session negotiation", "k": 5, "alpha": 0.5}'],
        ),
        Skill(
            id="ingest",
            name="Ingest documents",
            description="Chunk, embed and upsert documents or server-side paths (IngestRequest).",
            tags=["retrieval", "ingestion"],
            examples=['{"paths": ["docs/"], "collection": "default"}'],
        ),
    ],
)


def build(settings: AgentSettings) -> AgentParts:
    """The retriever's parts."""
    pending = not_built("issue #3 (document store and retriever)")
    return AgentParts(card=CARD, handlers={"search": pending, "ingest": pending})
