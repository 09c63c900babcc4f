"""The embedded backend: LanceDB under the data dir (the default; no server to run).

Each collection is a Lance table. Full-text search uses LanceDB's native FTS index (BM25);
vectors use cosine distance, exact until the table reaches ``ann_min_rows`` and through an
IVF-HNSW-SQ index after :meth:`LanceStore.optimize` builds one. ``replace_documents`` is one
``merge_insert`` transaction, so a document is never half-replaced.

Other processes write the same folder (``scriptorium ingest --direct`` while the retriever
serves), so every operation starts from the latest committed version: an open table is
brought up to date with ``checkout_latest()`` once per operation (one version check, and all
reads of one hybrid query see one snapshot), and collections are looked up by name until
found, so one made elsewhere is found too. See docs/retrieval.md for the measured cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protocol.extras import extra

with extra("retrieval", feature="the LanceDB store"):
    import lancedb
    import numpy as np
    import pyarrow as pa
    from lancedb.index import FTS, BTree, IvfHnswSq

from agents.retriever.store.base import (
    HIT_FIELDS,
    STORED_FIELDS,
    Chunk,
    CollectionNotFound,
    DocumentStore,
    FilterValue,
    Hit,
    HybridSearch,
    NearestSearch,
    QueryVector,
    StoreError,
    StoreUnavailable,
    UpsertReport,
    awaited_vector,
    check_collection,
    discard,
    hit_from_row,
    relative_score_fusion,
    stored_fields,
)

log = logging.getLogger(__name__)
#: The columns a hit is read from.
HIT_COLUMNS = ["id", *HIT_FIELDS]


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("document_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("source", pa.string()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("title", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("doc_hash", pa.string()),
            pa.field("metadata", pa.string()),
        ]
    )


def _quote(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def where_clause(filters: Mapping[str, FilterValue]) -> str | None:
    """Our (checked) filters as a LanceDB SQL predicate."""
    if not filters:
        return None
    clauses = []
    for name, value in sorted(filters.items()):
        values = list(value) if isinstance(value, list | tuple) else [value]
        if name == "tags":
            clauses.append("(" + " OR ".join(f"array_has(tags, {_quote(v)})" for v in values) + ")")
        elif len(values) == 1:
            clauses.append(f"{name} = {_quote(values[0])}")
        else:
            clauses.append(f"{name} IN ({', '.join(_quote(v) for v in values)})")
    return " AND ".join(clauses)


class LanceStore(DocumentStore):
    """Collections as LanceDB tables under ``path``."""

    def __init__(
        self,
        path: Path,
        *,
        dim: int,
        ann_min_rows: int = 5_000,
        candidates: int = 50,
        nprobes: int = 20,
        ef: int = 96,
    ) -> None:
        self.path = path
        self.dim = dim
        self.ann_min_rows = ann_min_rows
        self.candidates = candidates
        self.nprobes = nprobes
        self.ef = ef
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._fts_ready: set[str] = set()
        self._lock = asyncio.Lock()

    async def _connect(self) -> Any:
        if self._db is None:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                # No read_consistency_interval: tables are refreshed once per operation
                # instead (see _table), which costs one version check per query, not per read.
                self._db = await lancedb.connect_async(str(self.path))
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot open the LanceDB store at {self.path}: {exc}; check the data dir "
                    "(SCRIPTORIUM_DATA_DIR) is writable"
                ) from exc
        return self._db

    async def _table(self, collection: str, *, create: bool = False) -> Any:
        """The collection's table at its latest committed version (whoever committed it)."""
        check_collection(collection)
        table = self._tables.get(collection)
        if table is not None and await self._refresh(collection, table):
            return table
        db = await self._connect()
        async with self._lock:
            if collection in self._tables:
                return self._tables[collection]
            names = await self._names(db)
            if collection in names:
                table = await db.open_table(collection)
                self._check_dim(collection, await table.schema())
            elif create:
                table = await db.create_table(collection, schema=_schema(self.dim))
            else:
                raise CollectionNotFound(collection)
            await self._check_fts(collection, table)
            self._tables[collection] = table
            return table

    async def _refresh(self, collection: str, table: Any) -> bool:
        """Move an open table to the latest version; False if it is gone (dropped elsewhere)."""
        try:
            await table.checkout_latest()
        except Exception as exc:  # lance raises RuntimeError/OSError "Not found: ..."
            log.info(
                "table gone, looking it up again",
                extra={"collection": collection, "error": str(exc)[:200]},
            )
            self._tables.pop(collection, None)
            self._fts_ready.discard(collection)
            return False
        if collection not in self._fts_ready:
            await self._check_fts(collection, table)  # another process may have indexed it
        return True

    async def _check_fts(self, collection: str, table: Any) -> None:
        indices = {index.columns[0] for index in await table.list_indices()}
        if "text" in indices:
            self._fts_ready.add(collection)

    def _check_dim(self, collection: str, schema: pa.Schema) -> None:
        stored = schema.field("vector").type.list_size
        if stored != self.dim:
            raise StoreError(
                f"collection {collection!r} holds {stored}-d vectors but the embedding model "
                f"makes {self.dim}-d ones; use the model it was built with or re-ingest it "
                "into a new collection"
            )

    @staticmethod
    async def _names(db: Any) -> list[str]:
        response = await db.list_tables()
        names = getattr(response, "tables", response)
        return [str(name) for name in names]

    async def _ensure_collection(self, collection: str) -> None:
        await self._table(collection, create=True)

    async def _collections(self) -> list[str]:
        return await self._names(await self._connect())

    async def _drop_collection(self, collection: str) -> None:
        db = await self._connect()
        if collection in await self._names(db):
            await db.drop_table(collection)
        self._tables.pop(collection, None)
        self._fts_ready.discard(collection)

    def _rows(self, chunks: Sequence[Chunk]) -> pa.Table:
        vectors = np.stack([c.vector for c in chunks]).astype(np.float32).reshape(-1)
        rows = [stored_fields(c) for c in chunks]
        columns: dict[str, Any] = {name: [row[name] for row in rows] for name in STORED_FIELDS}
        return pa.table(
            {
                "id": [c.id for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), self.dim),
                **columns,
            },
            schema=_schema(self.dim),
        )

    async def _upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        table = await self._table(collection, create=True)
        await (
            table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(self._rows(chunks))
        )
        await self._ensure_fts(collection, table)
        return UpsertReport(written=len(chunks))

    async def _replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        table = await self._table(collection, create=True)
        chunks = [c for doc_chunks in documents.values() for c in doc_chunks]
        scope = f"document_id IN ({', '.join(_quote(d) for d in documents)})"
        builder = (
            table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(scope)
        )
        if chunks:
            await builder.execute(self._rows(chunks))
            await self._ensure_fts(collection, table)
        else:
            await table.delete(scope)
        return UpsertReport(written=len(chunks))

    async def _ensure_fts(self, collection: str, table: Any) -> None:
        """The BM25 index on text and scalar indexes on the ids hybrid search looks up."""
        if collection in self._fts_ready:
            return
        await table.create_index("text", config=FTS(with_position=False), replace=True)
        await table.create_index("id", config=BTree(), replace=True)
        await table.create_index("document_id", config=BTree(), replace=True)
        self._fts_ready.add(collection)

    async def _delete_document(self, collection: str, document_id: str) -> int:
        table = await self._table(collection)
        predicate = f"document_id = {_quote(document_id)}"
        before: int = await table.count_rows(predicate)
        if before:
            await table.delete(predicate)
        return before

    async def _document_hashes(
        self, collection: str, document_ids: Sequence[str]
    ) -> dict[str, str]:
        table = await self._table(collection)
        found: dict[str, set[str]] = {}
        for start in range(0, len(document_ids), 500):
            batch = document_ids[start : start + 500]
            rows = (
                await table.query()
                .where(f"document_id IN ({', '.join(_quote(d) for d in batch)})")
                .select(["document_id", "doc_hash"])
                .to_arrow()
            )
            for doc, digest in zip(
                rows["document_id"].to_pylist(), rows["doc_hash"].to_pylist(), strict=True
            ):
                found.setdefault(doc, set()).add(digest)
        return {doc: next(iter(hashes)) for doc, hashes in found.items() if len(hashes) == 1}

    async def _count(self, collection: str, *, document_id: str | None) -> int:
        table = await self._table(collection)
        predicate = None if document_id is None else f"document_id = {_quote(document_id)}"
        rows: int = await table.count_rows(predicate)
        return rows

    async def _optimize(self, collection: str) -> None:
        """Compact, refresh the FTS index, and build the ANN index once the table is large."""
        table = await self._table(collection)
        await table.optimize()
        rows = await table.count_rows()
        indices = {index.columns[0] for index in await table.list_indices()}
        if rows >= self.ann_min_rows and "vector" not in indices:
            log.info("building ANN index", extra={"collection": collection, "rows": rows})
            await table.create_index(
                "vector", config=IvfHnswSq(distance_type="cosine"), replace=True
            )

    async def _vector_query(self, collection: str, search: NearestSearch) -> list[Hit]:
        table = await self._table(collection)
        query = (
            table.query()
            .nearest_to(search.vector)
            .distance_type("cosine")
            .select([*HIT_COLUMNS, "_distance"])
            .limit(search.k)
        )
        if search.exact:
            query = query.bypass_vector_index()
        else:
            query = query.nprobes(self.nprobes).ef(self.ef)
        clause = where_clause(search.filters)
        if clause:
            query = query.where(clause)
        rows = await query.to_list()
        return [hit_from_row(row, 1.0 - float(row["_distance"]), id_field="id") for row in rows]

    async def _candidates(
        self,
        table: Any,
        collection: str,
        *,
        text: str,
        vector: QueryVector | None,
        n: int,
        clause: str | None,
    ) -> list[tuple[str, float]]:
        """Ids and raw scores only (fetching text for every candidate costs more than search)."""
        if vector is not None:
            query = (
                table.query()
                .nearest_to(self._query_vector(await awaited_vector(vector)))
                .distance_type("cosine")
                .nprobes(self.nprobes)
                .ef(max(self.ef, n))
                .select(["id", "_distance"])
                .limit(n)
            )
        elif collection in self._fts_ready:
            query = (
                table.query()
                .nearest_to_text(text, columns="text")
                .select(["id", "_score"])
                .limit(n)
            )
        else:
            return []
        if clause:
            query = query.where(clause)
        rows = (await query.to_arrow()).to_pylist()
        if vector is not None:
            return [(row["id"], 1.0 - float(row["_distance"])) for row in rows]
        return [(row["id"], float(row["_score"])) for row in rows]

    async def _query(self, collection: str, search: HybridSearch) -> list[Hit]:
        text, vector, k, alpha = search.text, search.vector, search.k, search.alpha
        try:
            table = await self._table(collection)
        except StoreError:
            discard(vector)
            raise
        clause = where_clause(search.filters)
        n = max(self.candidates, k)
        vector_hits: list[tuple[str, float]] = []
        bm25: list[tuple[str, float]] = []
        if alpha >= 1.0:
            vector_hits = await self._candidates(
                table, collection, text=text, vector=vector, n=k, clause=clause
            )
        elif alpha <= 0.0:
            discard(vector)
            bm25 = await self._candidates(
                table, collection, text=text, vector=None, n=n, clause=clause
            )
        else:
            vector_hits, bm25 = await asyncio.gather(
                self._candidates(table, collection, text=text, vector=vector, n=n, clause=clause),
                self._candidates(table, collection, text=text, vector=None, n=n, clause=clause),
            )
        ranked = relative_score_fusion(vector_hits, bm25, alpha=alpha, k=k)
        if not ranked:
            return []
        ids = ", ".join(_quote(chunk_id) for chunk_id, _ in ranked)
        rows = await table.query().where(f"id IN ({ids})").select(HIT_COLUMNS).to_list()
        by_id = {row["id"]: row for row in rows}
        return [
            hit_from_row(by_id[chunk_id], score, id_field="id")
            for chunk_id, score in ranked
            if chunk_id in by_id
        ]

    async def close(self) -> None:
        self._tables.clear()
        self._db = None
