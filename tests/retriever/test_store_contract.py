"""The store contract: every backend must pass every test here.

Runs against LanceDB always; against Weaviate through the labelled stand-in and, when
WEAVIATE_URL is set, against a live server (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.retriever.store.base import Chunk, CollectionNotFound, DocumentStore, StoreError
from agents.retriever.store.lancedb import LanceStore
from tests.retriever.conftest import DIM, twin

COLLECTION = "Contract"


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def chunk(doc: str, i: int, text: str, vector: np.ndarray, **extra: object) -> Chunk:
    return Chunk(
        id=f"{doc}#{i}",
        document_id=doc,
        text=text,
        vector=vector,
        source=f"{doc}.md",
        start=i * 10,
        end=i * 10 + len(text),
        doc_hash=str(extra.pop("doc_hash", "h1")),
        **extra,  # type: ignore[arg-type]
    )


CORPUS = [
    chunk("bees", 0, "Honey bees make honey from nectar in the hive", unit(1, 0), tags=["insects"]),
    chunk("bees", 1, "The queen bee lays eggs", unit(0.9, 0.1), tags=["insects"], heading="Hive"),
    chunk("redis", 0, "Valkey is a fork of the Redis key value store", unit(0, 1), kind="text"),
    chunk("redis", 1, "Streams keep an append only log of events", unit(0.1, 0.9), kind="text"),
    chunk("lance", 0, "LanceDB stores vectors in columnar files", unit(0, 0, 1), title="Lance"),
]


async def _load(store: DocumentStore) -> None:
    docs: dict[str, list[Chunk]] = {}
    for c in CORPUS:
        docs.setdefault(c.document_id, []).append(c)
    report = await store.replace_documents(COLLECTION, docs)
    assert report.written == len(CORPUS)
    assert not report.errors
    await store.optimize(COLLECTION)


async def test_collections_are_created_listed_and_dropped(store: DocumentStore) -> None:
    await store.ensure_collection(COLLECTION)
    await store.ensure_collection(COLLECTION)
    assert COLLECTION in await store.collections()
    assert await store.count(COLLECTION) == 0
    await store.drop_collection(COLLECTION)
    assert COLLECTION not in await store.collections()


async def test_a_missing_collection_is_not_found(store: DocumentStore) -> None:
    with pytest.raises(CollectionNotFound, match="'Missing' does not exist") as caught:
        await store.query("Missing", text="x", vector=unit(1), k=1)
    assert caught.value.collection == "Missing"
    with pytest.raises(CollectionNotFound):
        await store.count("Missing")
    assert await store.document_hashes("Missing", ["a"]) == {}
    assert "Missing" not in await store.collections()


async def test_every_instance_sees_what_another_committed(store: DocumentStore) -> None:
    await _load(store)
    assert await store.count(COLLECTION) == 5  # this instance has the collection open now
    other = twin(store)
    try:
        await other.upsert(COLLECTION, [chunk("otters", 0, "Otters hold hands", unit(0, 0, 0, 1))])
        await other.optimize(COLLECTION)
        await other.upsert("Elsewhere", [chunk("owls", 0, "Owls hunt at night", unit(1))])
        await other.optimize("Elsewhere")
    finally:
        await other.close()
    assert await store.count(COLLECTION) == 6
    [hit] = await store.query(COLLECTION, text="otters", vector=unit(0, 0, 0, 1), k=1)
    assert hit.document_id == "otters"
    [bm25] = await store.query(COLLECTION, text="otters", vector=unit(1), k=1, alpha=0.0)
    assert bm25.document_id == "otters"
    assert "Elsewhere" in await store.collections()
    [owl] = await store.query("Elsewhere", text="owls", vector=unit(1), k=1)
    assert owl.document_id == "owls"


async def test_invalid_collection_name_is_refused(store: DocumentStore) -> None:
    with pytest.raises(StoreError, match="invalid collection name"):
        await store.ensure_collection("no spaces; please")


async def test_count_and_document_hashes(store: DocumentStore) -> None:
    await _load(store)
    assert await store.count(COLLECTION) == 5
    assert await store.count(COLLECTION, document_id="bees") == 2
    assert await store.document_hashes(COLLECTION, ["bees", "redis", "missing"]) == {
        "bees": "h1",
        "redis": "h1",
    }


async def test_vector_only_ranks_by_cosine(store: DocumentStore) -> None:
    await _load(store)
    hits = await store.query(COLLECTION, text="anything", vector=unit(0, 1), k=2, alpha=1.0)
    assert [h.chunk_id for h in hits] == ["redis#0", "redis#1"]
    assert hits[0].score >= hits[1].score


async def test_bm25_only_ranks_by_keywords(store: DocumentStore) -> None:
    await _load(store)
    hits = await store.query(COLLECTION, text="queen eggs", vector=unit(0, 1), k=3, alpha=0.0)
    assert hits[0].chunk_id == "bees#1"
    assert all(h.document_id == "bees" for h in hits)


async def test_hybrid_combines_both_signals(store: DocumentStore) -> None:
    await _load(store)
    hits = await store.query(COLLECTION, text="columnar vectors", vector=unit(0, 1), k=5, alpha=0.5)
    ids = [h.chunk_id for h in hits]
    assert "lance#0" in ids[:2]  # BM25 signal
    assert "redis#0" in ids[:2]  # vector signal
    assert hits == sorted(hits, key=lambda h: -h.score)


async def test_results_carry_provenance(store: DocumentStore) -> None:
    await _load(store)
    [hit] = await store.query(COLLECTION, text="queen", vector=unit(1, 0), k=1, alpha=0.0)
    assert (hit.document_id, hit.source, hit.start, hit.heading) == ("bees", "bees.md", 10, "Hive")
    assert hit.text == "The queen bee lays eggs"


@pytest.mark.parametrize(
    ("filters", "expected_docs"),
    [
        ({"document_id": "redis"}, {"redis"}),
        ({"document_id": ["redis", "lance"]}, {"redis", "lance"}),
        ({"tags": "insects"}, {"bees"}),
        ({"kind": "text", "source": "redis.md"}, {"redis"}),
        ({"title": "Lance"}, {"lance"}),
    ],
)
async def test_filters(
    store: DocumentStore, filters: dict[str, object], expected_docs: set[str]
) -> None:
    await _load(store)
    for alpha in (0.0, 0.5, 1.0):
        hits = await store.query(
            COLLECTION,
            text="the store of bees",
            vector=unit(1, 1, 1),
            k=10,
            alpha=alpha,
            filters=filters,  # type: ignore[arg-type]
        )
        assert {h.document_id for h in hits} <= expected_docs
    vector_hits = await store.query(
        COLLECTION,
        text="x",
        vector=unit(1, 1, 1),
        k=10,
        alpha=1.0,
        filters=filters,  # type: ignore[arg-type]
    )
    assert {h.document_id for h in vector_hits} == expected_docs


async def test_unknown_filter_field_is_refused(store: DocumentStore) -> None:
    await _load(store)
    with pytest.raises(StoreError, match="cannot filter on colour"):
        await store.query(COLLECTION, text="x", vector=unit(1), filters={"colour": "red"})


async def test_replace_documents_swaps_a_documents_chunks(store: DocumentStore) -> None:
    await _load(store)
    new = [chunk("bees", 0, "Bumblebees nest in the ground", unit(1, 0), doc_hash="h2")]
    await store.replace_documents(COLLECTION, {"bees": new})
    assert await store.count(COLLECTION, document_id="bees") == 1
    assert await store.count(COLLECTION) == 4
    assert (await store.document_hashes(COLLECTION, ["bees"]))["bees"] == "h2"
    [hit] = await store.query(COLLECTION, text="bumblebees", vector=unit(1, 0), k=1, alpha=0.0)
    assert hit.text == "Bumblebees nest in the ground"


async def test_upsert_overwrites_by_id(store: DocumentStore) -> None:
    await _load(store)
    await store.upsert(COLLECTION, [chunk("lance", 0, "Lance files are columnar", unit(0, 0, 1))])
    assert await store.count(COLLECTION) == 5
    [hit] = await store.query(COLLECTION, text="files", vector=unit(0, 0, 1), k=1, alpha=0.0)
    assert hit.text == "Lance files are columnar"


async def test_delete_document(store: DocumentStore) -> None:
    await _load(store)
    assert await store.delete_document(COLLECTION, "redis") == 2
    assert await store.count(COLLECTION) == 3
    assert await store.delete_document(COLLECTION, "redis") == 0
    hits = await store.query(COLLECTION, text="valkey redis", vector=unit(0, 1), k=5, alpha=0.5)
    assert all(h.document_id != "redis" for h in hits)


async def test_exact_vector_query_matches_brute_force(store: DocumentStore) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((200, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [chunk(f"d{i}", 0, f"text {i}", v) for i, v in enumerate(vectors)]
    await store.upsert(COLLECTION, chunks)
    await store.optimize(COLLECTION)
    query = vectors[3] + 0.1
    query /= np.linalg.norm(query)
    expected = [f"d{i}#0" for i in np.argsort(-(vectors @ query))[:10]]
    exact = await store.vector_query(COLLECTION, query, k=10, exact=True)
    assert [h.chunk_id for h in exact] == expected
    approximate = await store.vector_query(COLLECTION, query, k=10)
    assert len(set(h.chunk_id for h in approximate) & set(expected)) >= 8


async def test_wrong_vector_size_is_refused(store: DocumentStore) -> None:
    bad = chunk("x", 0, "text", np.ones(DIM + 1, dtype=np.float32))
    with pytest.raises(StoreError):
        await store.upsert(COLLECTION, [bad])


async def test_lancedb_finds_what_another_process_dropped_and_indexed(tmp_path: Path) -> None:
    """LanceDB only (a Weaviate server is shared by nature): an open table can go stale."""
    store = LanceStore(tmp_path / "db", dim=DIM)
    other = LanceStore(tmp_path / "db", dim=DIM)
    await store.ensure_collection(COLLECTION)  # open here while empty: no FTS index yet
    assert await store.query(COLLECTION, text="queen", vector=unit(1), k=1, alpha=0.0) == []
    await _load(other)  # another writer adds rows and builds the FTS index
    [hit] = await store.query(COLLECTION, text="queen", vector=unit(1), k=1, alpha=0.0)
    assert hit.chunk_id == "bees#1"
    await other.drop_collection(COLLECTION)
    with pytest.raises(CollectionNotFound):
        await store.count(COLLECTION)
    await store.close()
    await other.close()


async def test_every_backend_refuses_the_same_bad_arguments(store: DocumentStore) -> None:
    await _load(store)
    wrong = np.ones(DIM + 1, dtype=np.float32)
    with pytest.raises(StoreError, match="query vector has shape"):
        await store.vector_query(COLLECTION, wrong)
    with pytest.raises(StoreError, match="query vector has shape"):
        await store.query(COLLECTION, text="bees", vector=wrong, alpha=0.5)
    with pytest.raises(StoreError, match="lists no values"):
        await store.vector_query(COLLECTION, unit(1), filters={"kind": []})
    with pytest.raises(StoreError, match="cannot filter on color"):
        await store.query(COLLECTION, text="bees", vector=unit(1), filters={"color": "red"})
    with pytest.raises(StoreError, match="has a vector of shape"):
        await store.upsert(COLLECTION, [chunk("odd", 0, "odd", wrong)])
    with pytest.raises(StoreError, match="belong to another document"):
        await store.replace_documents(COLLECTION, {"bees": [CORPUS[2]]})
    with pytest.raises(StoreError, match="invalid collection name"):
        await store.count("no-dashes")
    assert await store.count(COLLECTION) == len(CORPUS)


async def test_a_hit_is_the_passage_agents_exchange_plus_title_and_heading(
    store: DocumentStore,
) -> None:
    await _load(store)
    (hit,) = await store.vector_query(COLLECTION, unit(0.9, 0.1), k=1, exact=True)
    passage = hit.passage()
    assert type(passage).__name__ == "Passage"
    assert (passage.chunk_id, passage.document_id, passage.start) == ("bees#1", "bees", 10)
    assert passage.metadata["heading"] == "Hive"
    assert "title" not in passage.metadata
