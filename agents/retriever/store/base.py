"""The store contract, with Weaviate's semantics, that every backend implements.

A collection holds chunks: id, document id, text, vector and metadata. Queries are hybrid:
BM25 over the text and cosine similarity over the vectors, fused by *relative score fusion*
(Weaviate's default): each list's scores are min-max normalised to [0, 1] and combined as
``alpha * vector + (1 - alpha) * bm25``; ``alpha=0`` is BM25 only, ``alpha=1`` vector only.

Filters are equalities on the filterable fields (a list value means "any of"); ``tags``
matches when the chunk has the tag.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
#: A query vector, or one still being computed (so a search can start before it is ready).
QueryVector = Vector | Awaitable[Vector]
FilterValue = str | int | float | bool | Sequence[str] | Sequence[int] | Sequence[float]
#: Fields a filter may name; anything else in chunk metadata is returned but not filterable.
FILTERABLE = ("document_id", "source", "title", "heading", "kind", "tags")
COLLECTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


class StoreError(RuntimeError):
    """The store refused or could not do something; the message says what to do."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (a Weaviate server down, a data dir unreadable)."""


class CollectionNotFound(StoreError):
    """The collection does not exist (for this tenant); the message says how to make it."""

    def __init__(self, collection: str, message: str | None = None) -> None:
        self.collection = collection
        super().__init__(
            message or f"collection {collection!r} does not exist; ingest something into it first"
        )


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, ready to store."""

    id: str
    document_id: str
    text: str
    vector: Vector
    source: str
    start: int = 0
    end: int = 0
    title: str = ""
    heading: str = ""
    kind: str = ""
    tags: Sequence[str] = ()
    doc_hash: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A chunk found by a query, with its fused score (higher is better)."""

    chunk_id: str
    document_id: str
    source: str
    text: str
    score: float
    start: int = 0
    end: int = 0
    title: str = ""
    heading: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class UpsertReport:
    """What an upsert did; ``errors`` maps chunk id to the reason it was refused."""

    written: int = 0
    errors: dict[str, str] = field(default_factory=dict)


async def resolve(vector: QueryVector) -> Vector:
    """The vector itself, awaiting it if it is still being computed."""
    if inspect.isawaitable(vector):
        return await vector
    return vector


def discard(vector: QueryVector) -> None:
    """Drop a vector that is still being computed and will not be needed."""
    if isinstance(vector, asyncio.Future):
        vector.cancel()
    elif inspect.iscoroutine(vector):
        vector.close()


def check_collection(name: str) -> str:
    """A valid collection name, or :class:`StoreError` saying what one looks like."""
    if not COLLECTION_NAME.match(name):
        raise StoreError(
            f"invalid collection name {name!r}: use a letter, then letters, digits or _ "
            "(at most 63 characters)"
        )
    return name


def check_filters(filters: Mapping[str, FilterValue]) -> None:
    """Refuse filters on fields that are not filterable."""
    unknown = sorted(set(filters) - set(FILTERABLE))
    if unknown:
        raise StoreError(
            f"cannot filter on {', '.join(unknown)}; filterable fields: {', '.join(FILTERABLE)}"
        )


def relative_score_fusion(
    vector_hits: Sequence[Hit], bm25_hits: Sequence[Hit], *, alpha: float, k: int
) -> list[Hit]:
    """Fuse two ranked lists like Weaviate's relativeScoreFusion; returns the top ``k``."""

    def normalised(hits: Sequence[Hit]) -> dict[str, float]:
        if not hits:
            return {}
        scores = [h.score for h in hits]
        low, high = min(scores), max(scores)
        span = high - low
        return {h.chunk_id: (1.0 if span == 0 else (h.score - low) / span) for h in hits}

    by_id = {h.chunk_id: h for h in [*bm25_hits, *vector_hits]}
    vec, bm25 = normalised(vector_hits), normalised(bm25_hits)
    fused = {cid: alpha * vec.get(cid, 0.0) + (1.0 - alpha) * bm25.get(cid, 0.0) for cid in by_id}
    ranked = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
    return [_with_score(by_id[cid], fused[cid]) for cid in ranked]


def _with_score(hit: Hit, score: float) -> Hit:
    return Hit(
        chunk_id=hit.chunk_id,
        document_id=hit.document_id,
        source=hit.source,
        text=hit.text,
        score=score,
        start=hit.start,
        end=hit.end,
        title=hit.title,
        heading=hit.heading,
        metadata=hit.metadata,
    )


class DocumentStore(ABC):
    """Chunks in named collections, with hybrid search. Both backends pass one contract suite.

    Every operation sees every write committed before it started, whichever process made it
    (the store is shared: the retriever serves while ``scriptorium ingest --direct`` writes).
    Reading or writing a collection that does not exist raises :class:`CollectionNotFound`,
    except the ``ensure_collection`` / ``upsert`` / ``replace_documents`` that create it.
    """

    @abstractmethod
    async def ensure_collection(self, collection: str) -> None:
        """Create the collection if it does not exist (idempotent)."""

    @abstractmethod
    async def collections(self) -> list[str]:
        """Names of the existing collections, sorted, including those other processes made."""

    @abstractmethod
    async def drop_collection(self, collection: str) -> None:
        """Delete a collection and everything in it."""

    @abstractmethod
    async def replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        """Make each document's chunks its only chunks (upsert them, delete the others).

        LanceDB does a whole batch in one transaction; Weaviate writes the new chunks before
        deleting the old ones, so a crash leaves a document with chunks of both versions,
        which :meth:`document_hashes` reports as not stored (so it is ingested again).
        """

    @abstractmethod
    async def upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        """Insert or overwrite chunks by id."""

    @abstractmethod
    async def delete_document(self, collection: str, document_id: str) -> int:
        """Delete every chunk of a document; returns how many were deleted."""

    @abstractmethod
    async def document_hashes(self, collection: str, document_ids: Sequence[str]) -> dict[str, str]:
        """Content hash of each stored document (absent: not stored, or stored half-way)."""

    @abstractmethod
    async def query(
        self,
        collection: str,
        *,
        text: str,
        vector: QueryVector,
        k: int = 5,
        alpha: float = 0.5,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[Hit]:
        """Hybrid search; ``alpha`` 0 = BM25 only … 1 = vector only.

        ``vector`` may be an awaitable: the BM25 half can run while the query is embedded.
        """

    @abstractmethod
    async def vector_query(
        self,
        collection: str,
        vector: Vector,
        *,
        k: int = 10,
        exact: bool = False,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours by cosine similarity; ``exact`` bypasses any ANN index."""

    @abstractmethod
    async def count(self, collection: str, *, document_id: str | None = None) -> int:
        """Chunks in the collection (or of one document)."""

    @abstractmethod
    async def optimize(self, collection: str) -> None:
        """Bring indexes up to date after a bulk write (a no-op where the server does it)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
