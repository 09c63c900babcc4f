"""The library: the store, the embedding model and ingestion, as the retriever uses them.

The retriever agent opens it; so does ``scriptorium ingest --direct`` / ``search --direct``
(the CLI's explicit in-process mode) from the same settings, and the store shows each of them
what the other committed. Writers and critics never open it: they get passages inside their
requests (see docs/retrieval.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agents.common.embedding import Embedder
from agents.retriever.chunking import ChunkingConfig
from agents.retriever.ingest import (
    FileItem,
    Ingestor,
    IngestStats,
    ProgressCallback,
)
from agents.retriever.readers import Item, Skipped, SourceDocument, iter_paths, read_paths
from agents.retriever.settings import RetrieverSettings
from agents.retriever.store.base import (
    CollectionNotFound,
    DocumentStore,
    FilterValue,
    Hit,
    StoreError,
)
from agents.retriever.store.lancedb import LanceStore
from protocol.payloads import (
    Document,
    IngestReport,
    SearchRequest,
    SearchResult,
)

log = logging.getLogger(__name__)
#: The collection searched and ingested into when none is named.
DEFAULT_COLLECTION = "default"
#: Keys of an inline document's metadata that become the document's own title and kind.
DOCUMENT_FIELDS = ("title", "kind")


class PathNotAllowed(StoreError):
    """A server-side path outside the configured ingest roots."""


class UnknownCollection(CollectionNotFound):
    """A search named a collection that does not exist; the message lists those that do."""

    def __init__(self, collection: str, known: list[str]) -> None:
        self.known = known
        if known:
            listed = f"known collections: {', '.join(known)}"
        else:
            listed = "the store holds no collections yet"
        super().__init__(
            collection,
            f"collection {collection!r} does not exist ({listed}); ingest into it first "
            f"(`scriptorium ingest PATH --collection {collection}`) or search one that exists",
        )


def open_store(settings: RetrieverSettings, dim: int) -> DocumentStore:
    """The configured store backend."""
    if settings.store_backend == "weaviate":
        from agents.retriever.store.weaviate import WeaviateStore

        if not settings.weaviate_url:
            raise StoreError("store=weaviate needs WEAVIATE_URL")
        return WeaviateStore(
            settings.weaviate_url,
            dim=dim,
            grpc_port=settings.weaviate_grpc_port,
            api_key=settings.weaviate_api_key.get_secret_value()
            if settings.weaviate_api_key
            else None,
            tenant=settings.weaviate_tenant,
            timeout_s=settings.request_timeout_s,
        )
    return LanceStore(settings.resolved_lancedb_dir, dim=dim, ann_min_rows=settings.ann_min_rows)


@dataclass
class Library:
    """Store + embedder + ingestor."""

    settings: RetrieverSettings
    store: DocumentStore
    embedder: Embedder
    ingestor: Ingestor

    @classmethod
    async def open(cls, settings: RetrieverSettings) -> Library:
        """Load the embedding model (preparing it once) and open the store."""
        started = time.perf_counter()
        embedder: Embedder = await asyncio.to_thread(settings.load_embedder)
        store = open_store(settings, embedder.dim)
        chunking = ChunkingConfig(
            target_words=settings.chunk_words,
            max_words=settings.chunk_max_words,
            overlap_words=settings.chunk_overlap_words,
        )
        log.info(
            "library open",
            extra={
                "store": settings.store_backend,
                "embedder": embedder.name,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        return cls(settings, store, embedder, Ingestor(store, embedder, chunking=chunking))

    async def close(self) -> None:
        await self.store.close()

    async def search(self, request: SearchRequest) -> SearchResult:
        """Hybrid search for a request (the query is embedded here).

        A collection that does not exist raises :class:`UnknownCollection` naming those that
        do, except the default collection of a store that holds none yet: that is an empty
        store, and finds nothing (:meth:`is_empty` says so).
        """
        if not request.query.strip():
            raise StoreError("empty query: give the words to search for")
        try:
            hits = await search_store(
                self.store,
                self.embedder,
                request.collection,
                request.query,
                k=request.k,
                alpha=request.alpha,
                filters=request.filters,
            )
        except CollectionNotFound as exc:
            known = await self.store.collections()
            if not known and request.collection == DEFAULT_COLLECTION:
                return SearchResult(query=request.query, passages=[])
            raise UnknownCollection(request.collection, known) from exc
        return SearchResult(query=request.query, passages=[hit.passage() for hit in hits])

    async def is_empty(self, collection: str) -> bool:
        """Whether the collection holds no chunks (or does not exist)."""
        try:
            return await self.store.count(collection) == 0
        except CollectionNotFound:
            return True

    def check_paths(self, paths: Iterable[str]) -> list[Path]:
        """Resolve server-side paths, refusing any outside the ingest roots."""
        roots = [root.resolve() for root in self.settings.ingest_roots]
        resolved = []
        for raw in paths:
            path = Path(raw).expanduser().resolve()
            if not any(path == root or root in path.parents for root in roots):
                raise PathNotAllowed(
                    f"{raw} is outside the ingest roots ({', '.join(map(str, roots))}); "
                    "send the documents inline or set SCRIPTORIUM_INGEST_ROOTS"
                )
            resolved.append(path)
        return resolved

    def _root_of(self, path: Path) -> Path | None:
        """The ingest root a path lies under (document ids are relative to it)."""
        resolved = path.resolve()
        for root in self.settings.ingest_roots:
            root = root.resolve()
            if resolved == root or root in resolved.parents:
                return root if resolved != root or resolved.is_dir() else root.parent
        return None

    async def ingest(
        self,
        *,
        paths: Iterable[Path] = (),
        documents: Iterable[Document] = (),
        collection: str = DEFAULT_COLLECTION,
        root: Path | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestStats:
        """Ingest files/folders and inline documents into a collection.

        Document ids of files are their paths relative to ``root`` (default: the ingest root
        they lie under), so the same tree ingested again maps onto the same documents.
        Progress counts files (a ``.jsonl`` file of many records is one file).
        """

        def items() -> Iterable[Item | FileItem]:
            for doc in documents:
                yield inline_document(doc)
            for path in paths:
                yield from file_items([path], root=root or self._root_of(path))

        return await self.ingestor.run(items(), collection, on_progress=on_progress)


def inline_document(doc: Document) -> SourceDocument:
    """An inline document as read: ``metadata.title`` / ``metadata.kind`` become its own.

    ``document_payload`` is the inverse, so a file sent inline is stored exactly as the same
    file read here (same id, hash and fields): either way of ingesting it is idempotent.
    """
    metadata = dict(doc.metadata)
    fields = {key: str(metadata.pop(key, "")) for key in DOCUMENT_FIELDS}
    return SourceDocument(
        id=doc.id or doc.source,
        text=doc.text,
        source=doc.source,
        kind=fields["kind"] or "inline",
        title=fields["title"],
        metadata=metadata,
    )


def document_payload(doc: SourceDocument) -> Document:
    """A document read from a file, to send inline (the inverse of :func:`inline_document`)."""
    return Document(
        id=doc.id,
        text=doc.text,
        source=doc.source,
        metadata={**doc.metadata, "title": doc.title, "kind": doc.kind},
    )


def file_items(paths: Iterable[Path], *, root: Path | None) -> Iterable[Item | FileItem]:
    """What :func:`read_paths` reads, each item tagged with the file it came from."""
    for file in iter_paths(paths):
        if isinstance(file, Skipped):
            yield file
            continue
        for item in read_paths([file], root=root):
            yield FileItem(str(file), item)


async def search_store(
    store: DocumentStore,
    embedder: Embedder,
    collection: str,
    query: str,
    *,
    k: int = 5,
    alpha: float = 0.5,
    filters: Mapping[str, FilterValue] | None = None,
) -> list[Hit]:
    """Hybrid search; the query is embedded in a thread while the BM25 half already runs."""
    vector = asyncio.ensure_future(asyncio.to_thread(embedder.embed_query, query))
    try:
        return await store.query(
            collection, text=query, vector=vector, k=k, alpha=alpha, filters=filters
        )
    finally:
        if not vector.done():
            vector.cancel()


def report(stats: IngestStats) -> IngestReport:
    """Ingestion totals as the payload agents exchange."""
    from protocol.payloads import SkippedFile

    return IngestReport(
        ingested=stats.ingested,
        unchanged=stats.unchanged,
        replaced=stats.replaced,
        chunks=stats.chunks,
        skipped=[SkippedFile(source=s.source, reason=s.reason) for s in stats.skipped],
    )
