"""Ingestion: read → chunk → embed → upsert, in batches, with progress and a report.

Documents are handled in batches of about ``batch_chunks`` chunks. For each batch the
store is asked which documents it already holds with the same content hash (those are
*unchanged* and cost nothing), the rest are chunked and embedded in a worker thread, and
the batch is written with one ``replace_documents`` call while the next batch is being
embedded. A document's chunks are replaced whole, so a crash or a cancel never leaves a
document half-written; re-running the same ingestion adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from protocol.extras import extra

with extra("retrieval", feature="ingestion"):
    import numpy as np

from agents.common.embedding import Embedder
from agents.retriever.chunking import ChunkingConfig, chunk_id, chunk_text
from agents.retriever.readers import Item, Skipped, SourceDocument
from agents.retriever.store.base import Chunk, DocumentStore
from protocol.payloads import integral_numbers


@dataclass(frozen=True)
class FileItem:
    """An item read from ``file``: progress counts files, not the records in them."""

    file: str
    item: Item


@dataclass
class IngestStats:
    """Running totals of an ingestion (also its final report).

    ``files`` holds the files read: those of items wrapped in :class:`FileItem`, and paths
    skipped whole; documents handed over unwrapped (inline ones) are not files.
    ``documents`` counts documents read, every record of a ``.jsonl`` file included.
    """

    files: set[str] = field(default_factory=set)
    documents: int = 0
    ingested: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    current: str = ""

    @property
    def chunks_per_s(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.chunks / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[IngestStats], Awaitable[None]]


def document_hash(doc: SourceDocument, fingerprint: str) -> str:
    """Changes when anything that ends up in the document's chunks changes.

    Numbers in the metadata count by value (``2024`` and ``2024.0`` hash alike), because
    A2A data parts carry every number as a double: a document sent inline then hashes as
    the same file read here.
    """
    digest = hashlib.sha256()
    for part in (doc.text, doc.title, doc.source, doc.kind, fingerprint):
        digest.update(part.encode())
        digest.update(b"\x00")
    metadata = integral_numbers(doc.metadata)
    digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class _Prepared:
    documents: dict[str, list[Chunk]]
    replaced: int
    ingested: int


class Ingestor:
    """Runs ingestions into one store with one embedder."""

    def __init__(
        self,
        store: DocumentStore,
        embedder: Embedder,
        *,
        chunking: ChunkingConfig | None = None,
        batch_chunks: int = 256,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunking = chunking or ChunkingConfig()
        self.batch_chunks = batch_chunks
        self.fingerprint = (
            f"{self.chunking.fingerprint()}|{embedder.name}|{embedder.backend}"
            f"|{embedder.max_seq_length}"
        )

    async def run(
        self,
        items: Iterable[Item | FileItem],
        collection: str,
        *,
        on_progress: ProgressCallback | None = None,
        progress_every_s: float = 0.5,
    ) -> IngestStats:
        """Ingest everything ``items`` yields into ``collection``."""
        stats = IngestStats()
        await self.store.ensure_collection(collection)
        pending: asyncio.Task[None] | None = None
        last_report = 0.0
        try:
            async for batch in self._batches(iter(items), stats):
                prepared = await self._prepare(batch, collection, stats)
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self._write(prepared, collection, stats))
                if on_progress and time.perf_counter() - last_report >= progress_every_s:
                    last_report = time.perf_counter()
                    await on_progress(stats)
            if pending is not None:
                await pending
                pending = None
            await self.store.optimize(collection)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        if on_progress:
            await on_progress(stats)
        return stats

    async def _batches(
        self, items: Iterator[Item | FileItem], stats: IngestStats
    ) -> AsyncIterator[list[SourceDocument]]:
        """Documents in batches of about ``batch_chunks`` estimated chunks (read in a thread)."""
        batch: list[SourceDocument] = []
        words = 0
        budget = self.batch_chunks * self.chunking.target_words
        while True:
            block = await asyncio.to_thread(_take, items, 64)
            for entry in block:
                item = entry.item if isinstance(entry, FileItem) else entry
                if isinstance(entry, FileItem):
                    stats.files.add(entry.file)
                if isinstance(item, Skipped):
                    stats.files.add(entry.file if isinstance(entry, FileItem) else item.source)
                    stats.skipped.append(item)
                    continue
                stats.documents += 1
                stats.current = item.source
                batch.append(item)
                words += len(item.text) // 6
                if words >= budget:
                    yield batch
                    batch, words = [], 0
            if len(block) < 64:
                break
        if batch:
            yield batch

    async def _prepare(
        self, batch: list[SourceDocument], collection: str, stats: IngestStats
    ) -> _Prepared:
        """Drop unchanged documents, chunk and embed the rest."""
        unique = {doc.id: doc for doc in batch}
        hashes = {doc_id: document_hash(doc, self.fingerprint) for doc_id, doc in unique.items()}
        stored = await self.store.document_hashes(collection, list(unique))
        todo = [doc for doc_id, doc in unique.items() if stored.get(doc_id) != hashes[doc_id]]
        stats.unchanged += len(unique) - len(todo)
        documents = await asyncio.to_thread(self._chunk_and_embed, todo, hashes)
        replaced = sum(1 for doc in todo if doc.id in stored)
        return _Prepared(documents, replaced=replaced, ingested=len(todo) - replaced)

    def _chunk_and_embed(
        self, docs: list[SourceDocument], hashes: dict[str, str]
    ) -> dict[str, list[Chunk]]:
        pieces = [(doc, piece) for doc in docs for piece in chunk_text(doc.text, self.chunking)]
        vectors = (
            self.embedder.embed_documents([piece.text for _, piece in pieces])
            if pieces
            else np.zeros((0, self.embedder.dim), dtype=np.float32)
        )
        documents: dict[str, list[Chunk]] = {doc.id: [] for doc in docs}
        for (doc, piece), vector in zip(pieces, vectors, strict=True):
            documents[doc.id].append(
                Chunk(
                    id=chunk_id(doc.id, piece.position, piece.text),
                    document_id=doc.id,
                    text=piece.text,
                    vector=vector,
                    source=doc.source,
                    start=piece.start,
                    end=piece.end,
                    title=doc.title,
                    heading=piece.heading,
                    kind=doc.kind,
                    tags=[str(t) for t in doc.metadata.get("tags", [])]
                    if isinstance(doc.metadata.get("tags"), list)
                    else [],
                    doc_hash=hashes[doc.id],
                    metadata=doc.metadata,
                )
            )
        return documents

    async def _write(self, prepared: _Prepared, collection: str, stats: IngestStats) -> None:
        if prepared.documents:
            report = await self.store.replace_documents(collection, prepared.documents)
            stats.chunks += report.written
        stats.replaced += prepared.replaced
        stats.ingested += prepared.ingested


def _take(items: Iterator[Item | FileItem], n: int) -> list[Item | FileItem]:
    """Up to ``n`` items (runs in a worker thread: reading files blocks)."""
    out: list[Item | FileItem] = []
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out
