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
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict

from protocol.extras import extra

with extra("retrieval", feature="the document store"):
    import numpy as np
    import numpy.typing as npt

from protocol.payloads import Passage

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


class Hit(Passage):
    """A chunk found by a query, with its fused score (higher is better).

    The payload agents exchange (:class:`~protocol.payloads.Passage`) plus the chunk's title
    and heading, which :meth:`passage` folds into the passage's metadata.
    """

    model_config = ConfigDict(frozen=True)

    title: str = ""
    heading: str = ""

    def passage(self) -> Passage:
        """The hit as the payload agents exchange (title and heading in its metadata)."""
        metadata = dict(self.metadata)
        if self.title:
            metadata.setdefault("title", self.title)
        if self.heading:
            metadata.setdefault("heading", self.heading)
        fields = self.model_dump(exclude={"title", "heading", "metadata"})
        return Passage(**fields, metadata=metadata)


@dataclass(frozen=True)
class HybridSearch:
    """A hybrid query as a backend receives it: collection name and filters checked."""

    text: str
    #: Not checked yet: it may still be computing (see :meth:`DocumentStore._query_vector`).
    vector: QueryVector
    k: int
    #: Clamped to [0, 1].
    alpha: float
    filters: Mapping[str, FilterValue]


@dataclass(frozen=True)
class NearestSearch:
    """A nearest-neighbour query as a backend receives it: everything checked."""

    #: float32, of the store's dimension.
    vector: Vector
    k: int
    exact: bool
    filters: Mapping[str, FilterValue]


@dataclass
class UpsertReport:
    """What an upsert did; ``errors`` maps chunk id to the reason it was refused."""

    written: int = 0
    errors: dict[str, str] = field(default_factory=dict)


async def awaited_vector(vector: QueryVector) -> Vector:
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
    """Refuse filters on fields that are not filterable, or that list no values."""
    unknown = sorted(set(filters) - set(FILTERABLE))
    if unknown:
        raise StoreError(
            f"cannot filter on {', '.join(unknown)}; filterable fields: {', '.join(FILTERABLE)}"
        )
    for name, value in filters.items():
        if isinstance(value, list | tuple) and not value:
            raise StoreError(f"filter on {name} lists no values; give at least one")


def relative_score_fusion(
    vector_hits: Sequence[tuple[str, float]],
    bm25_hits: Sequence[tuple[str, float]],
    *,
    alpha: float,
    k: int,
) -> list[tuple[str, float]]:
    """Fuse two ranked ``(chunk id, raw score)`` lists like Weaviate's relativeScoreFusion.

    Returns the top ``k`` as ``(chunk id, fused score)``, best first.
    """

    def normalised(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
        if not hits:
            return {}
        scores = [score for _, score in hits]
        low, high = min(scores), max(scores)
        span = high - low
        return {cid: (1.0 if span == 0 else (score - low) / span) for cid, score in hits}

    vec, bm25 = normalised(vector_hits), normalised(bm25_hits)
    fused = {
        cid: alpha * vec.get(cid, 0.0) + (1.0 - alpha) * bm25.get(cid, 0.0)
        for cid in {**bm25, **vec}
    }
    ranked = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
    return [(cid, fused[cid]) for cid in ranked]


#: What every backend stores of a chunk besides its id and vector (see :func:`stored_fields`).
STORED_FIELDS = (
    "document_id",
    "text",
    "source",
    "start",
    "end",
    "title",
    "heading",
    "kind",
    "tags",
    "doc_hash",
    "metadata",
)
#: The stored fields a hit is made of (besides the chunk id; see :func:`hit_from_row`).
HIT_FIELDS = tuple(f for f in STORED_FIELDS if f not in ("kind", "tags", "doc_hash"))


def stored_fields(chunk: Chunk) -> dict[str, Any]:
    """What every backend stores of a chunk besides its id and vector (metadata as JSON)."""
    return {
        "document_id": chunk.document_id,
        "text": chunk.text,
        "source": chunk.source,
        "start": int(chunk.start),
        "end": int(chunk.end),
        "title": chunk.title,
        "heading": chunk.heading,
        "kind": chunk.kind,
        "tags": [str(tag) for tag in chunk.tags],
        "doc_hash": chunk.doc_hash,
        "metadata": json.dumps(dict(chunk.metadata), default=str),
    }


def hit_from_row(row: Mapping[str, Any], score: float, *, id_field: str = "chunk_id") -> Hit:
    """A stored row (a LanceDB row, a Weaviate object's properties) as a hit."""
    raw = row.get("metadata")
    try:
        metadata = json.loads(raw) if isinstance(raw, str) and raw else {}
    except json.JSONDecodeError:
        metadata = {}
    return Hit(
        chunk_id=str(row[id_field]),
        document_id=str(row["document_id"]),
        source=str(row.get("source") or ""),
        text=str(row.get("text") or ""),
        score=score,
        start=int(row.get("start") or 0),
        end=int(row.get("end") or 0),
        title=str(row.get("title") or ""),
        heading=str(row.get("heading") or ""),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


class DocumentStore(ABC):
    """Chunks in named collections, with hybrid search. Both backends pass one contract suite.

    Every operation sees every write committed before it started, whichever process made it
    (the store is shared: the retriever serves while ``scriptorium ingest --direct`` writes).
    Reading or writing a collection that does not exist raises :class:`CollectionNotFound`,
    except the ``ensure_collection`` / ``upsert`` / ``replace_documents`` that create it.

    The public methods check their arguments (collection name, filters, vector shapes, which
    document a chunk belongs to) and then call the backend's ``_`` hooks, which may assume
    them valid.
    """

    #: Dimension of the vectors the store holds.
    dim: int

    async def ensure_collection(self, collection: str) -> None:
        """Create the collection if it does not exist (idempotent)."""
        await self._ensure_collection(check_collection(collection))

    async def collections(self) -> list[str]:
        """Names of the existing collections, sorted, including those other processes made."""
        return sorted(await self._collections())

    async def drop_collection(self, collection: str) -> None:
        """Delete a collection and everything in it."""
        await self._drop_collection(check_collection(collection))

    async def replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        """Make each document's chunks its only chunks (upsert them, delete the others).

        LanceDB does a whole batch in one transaction; Weaviate writes the new chunks before
        deleting the old ones, so a crash leaves a document with chunks of both versions,
        which :meth:`document_hashes` reports as not stored (so it is ingested again).
        """
        check_collection(collection)
        for document_id, chunks in documents.items():
            if any(c.document_id != document_id for c in chunks):
                raise StoreError(f"chunks filed under {document_id!r} belong to another document")
        if not documents:
            return UpsertReport()
        self._check_vectors([c for chunks in documents.values() for c in chunks])
        return await self._replace_documents(collection, documents)

    async def upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        """Insert or overwrite chunks by id."""
        check_collection(collection)
        if not chunks:
            return UpsertReport()
        self._check_vectors(chunks)
        return await self._upsert(collection, chunks)

    async def delete_document(self, collection: str, document_id: str) -> int:
        """Delete every chunk of a document; returns how many were deleted."""
        return await self._delete_document(check_collection(collection), document_id)

    async def document_hashes(self, collection: str, document_ids: Sequence[str]) -> dict[str, str]:
        """Content hash of each stored document (absent: not stored, or stored half-way)."""
        check_collection(collection)
        if not document_ids:
            return {}
        try:
            return await self._document_hashes(collection, document_ids)
        except CollectionNotFound:
            return {}

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
        Backends check it with :meth:`_query_vector` once they await it.
        """
        try:
            check_collection(collection)
            check_filters(filters or {})
        except StoreError:
            discard(vector)
            raise
        alpha = min(max(float(alpha), 0.0), 1.0)
        search = HybridSearch(text=text, vector=vector, k=k, alpha=alpha, filters=filters or {})
        return await self._query(collection, search)

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
        check_collection(collection)
        check_filters(filters or {})
        search = NearestSearch(self._query_vector(vector), k=k, exact=exact, filters=filters or {})
        return await self._vector_query(collection, search)

    async def count(self, collection: str, *, document_id: str | None = None) -> int:
        """Chunks in the collection (or of one document)."""
        return await self._count(check_collection(collection), document_id=document_id)

    async def optimize(self, collection: str) -> None:
        """Bring indexes up to date after a bulk write (a no-op where the server does it)."""
        await self._optimize(check_collection(collection))

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    # -- checks the backends share

    def _check_vectors(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            if chunk.vector.shape != (self.dim,):
                raise StoreError(
                    f"chunk {chunk.id} has a vector of shape {chunk.vector.shape}; "
                    f"this store holds {self.dim}-d vectors"
                )

    def _query_vector(self, vector: Vector) -> Vector:
        """``vector`` as float32, or :class:`StoreError` when it has the wrong shape."""
        array = np.asarray(vector, dtype=np.float32)
        if array.shape != (self.dim,):
            raise StoreError(
                f"query vector has shape {array.shape}; this store holds {self.dim}-d vectors"
            )
        return array

    # -- backend hooks: arguments already checked

    @abstractmethod
    async def _ensure_collection(self, collection: str) -> None: ...

    @abstractmethod
    async def _collections(self) -> list[str]: ...

    @abstractmethod
    async def _drop_collection(self, collection: str) -> None: ...

    @abstractmethod
    async def _replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        """Called with at least one document, every chunk filed under its own document."""

    @abstractmethod
    async def _upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        """Called with at least one chunk."""

    @abstractmethod
    async def _delete_document(self, collection: str, document_id: str) -> int: ...

    @abstractmethod
    async def _document_hashes(
        self, collection: str, document_ids: Sequence[str]
    ) -> dict[str, str]:
        """Called with at least one id; may raise :class:`CollectionNotFound`."""

    @abstractmethod
    async def _query(self, collection: str, search: HybridSearch) -> list[Hit]: ...

    @abstractmethod
    async def _vector_query(self, collection: str, search: NearestSearch) -> list[Hit]: ...

    @abstractmethod
    async def _count(self, collection: str, *, document_id: str | None) -> int: ...

    @abstractmethod
    async def _optimize(self, collection: str) -> None: ...
