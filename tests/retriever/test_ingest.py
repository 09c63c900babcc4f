"""Ingestion end to end: real embeddings, real LanceDB, idempotent and never half-written."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.retriever.chunking import ChunkingConfig, chunk_text
from agents.retriever.ingest import Ingestor, IngestStats
from agents.retriever.readers import SourceDocument, read_paths
from agents.retriever.store.base import Chunk, UpsertReport
from agents.retriever.store.lancedb import LanceStore

TOPICS = {
    "bees.md": "# Bees\nHoney bees live in hives and make honey from flower nectar. "
    "The queen bee lays all the eggs of the colony.",
    "valkey.md": "# Valkey\nValkey is an open source fork of the Redis key value store. "
    "It keeps streams, hashes and sorted sets in memory.",
    "lance.txt": "LanceDB stores vectors and text in columnar Lance files on local disk.",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TOPICS.items():
        (docs / name).write_text(text)
    (docs / "skip.bin").write_bytes(b"\x00\x01")
    return docs


@pytest.fixture
async def store(tmp_path: Path, embedder: Any) -> LanceStore:
    return LanceStore(tmp_path / "db", dim=embedder.dim)


async def _ingest(ingestor: Ingestor, folder: Path) -> IngestStats:
    return await ingestor.run(read_paths([folder], root=folder), "docs")


async def test_ingest_then_search(folder: Path, store: LanceStore, embedder: Any) -> None:
    stats = await _ingest(Ingestor(store, embedder), folder)
    assert (stats.ingested, stats.replaced, stats.unchanged) == (3, 0, 0)
    assert [Path(s.source).name for s in stats.skipped] == ["skip.bin"]
    assert stats.chunks == await store.count("docs") == 3
    query = "who lays the eggs in a hive?"
    hits = await store.query("docs", text=query, vector=embedder.embed_query(query), k=3, alpha=0.5)
    assert hits[0].document_id == "bees.md"
    assert hits[0].heading == "Bees"


async def test_reingesting_adds_nothing_and_changes_replace(
    folder: Path, store: LanceStore, embedder: Any
) -> None:
    ingestor = Ingestor(store, embedder)
    await _ingest(ingestor, folder)
    again = await _ingest(ingestor, folder)
    assert (again.ingested, again.replaced, again.unchanged, again.chunks) == (0, 0, 3, 0)
    assert await store.count("docs") == 3
    (folder / "lance.txt").write_text("LanceDB is an embedded database. It needs no server.")
    changed = await _ingest(ingestor, folder)
    assert (changed.ingested, changed.replaced, changed.unchanged) == (0, 1, 2)
    assert await store.count("docs", document_id="lance.txt") == 1
    query = "embedded database without a server"
    [hit] = await store.query(
        "docs", text=query, vector=embedder.embed_query(query), k=1, alpha=0.5
    )
    assert hit.text.startswith("LanceDB is an embedded database")


async def test_cancel_leaves_only_whole_documents(
    store: LanceStore, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ChunkingConfig(target_words=30, max_words=60, overlap_words=0)
    docs = [
        SourceDocument(
            id=f"doc{i}",
            text=" ".join(f"Document {i} sentence {j} is about topic {i}." for j in range(40)),
            source=f"doc{i}.txt",
            kind="text",
        )
        for i in range(40)
    ]
    ingestor = Ingestor(store, embedder, chunking=config, batch_chunks=16)
    written = asyncio.Event()
    replace = store.replace_documents

    async def replace_and_tell(
        collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        report = await replace(collection, documents)
        written.set()
        return report

    monkeypatch.setattr(store, "replace_documents", replace_and_tell)
    running = asyncio.create_task(ingestor.run(docs, "docs"))
    await asyncio.wait_for(written.wait(), 120)  # a first batch is in: cancel the rest
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    expected = {d.id: len(chunk_text(d.text, config)) for d in docs}
    hashes = await store.document_hashes("docs", list(expected))
    assert 0 < len(hashes) < len(docs)
    for doc_id in expected:
        stored = await store.count("docs", document_id=doc_id)
        assert stored in (0, expected[doc_id]), f"{doc_id} is half-written"
    finished = await ingestor.run(docs, "docs")
    assert finished.unchanged == len(hashes)
    assert await store.count("docs") == sum(expected.values())
