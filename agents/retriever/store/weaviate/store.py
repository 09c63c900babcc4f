"""The Weaviate store: connection, schema checks, writes and reads, through the v4 async client
(REST for the schema, gRPC for data). How collections map to classes is in :mod:`.schema`.

Writes are not atomic. :meth:`WeaviateStore.replace_documents` writes the new chunks first
and then deletes the document's other chunks. Every object carries the document's hash and
its chunk count, and :meth:`WeaviateStore.document_hashes` reports a document only when all
of its objects agree on both and the count is complete, so a crash (or a refused object)
half-way shows as "not stored" and the document is ingested again.

Multi-tenancy (optional): the class is shared, each store writes and reads its own tenant,
created on demand; dropping a collection removes the tenant (and the class once no tenant is
left).

Why one module of ~600 lines: it is one class, whose operations share its client, the set of
collections already checked and the schema lock; what does not need them is in the sibling
modules (schema, errors, connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

from protocol.extras import extra

with extra("retrieval", feature="the Weaviate store"):
    import numpy as np
    from weaviate import WeaviateAsyncClient
    from weaviate.classes.config import Configure, VectorDistances
    from weaviate.classes.data import DataObject
    from weaviate.classes.query import Filter, FilterReturn, HybridFusion, MetadataQuery, Metrics
    from weaviate.collections import CollectionAsync
    from weaviate.collections.classes.aggregate import GroupByAggregate
    from weaviate.collections.classes.config import CollectionConfig, CollectionConfigSimple
    from weaviate.exceptions import WeaviateInsertManyAllFailedError
    from weaviate.util import generate_uuid5

from agents.retriever.store.base import (
    Chunk,
    CollectionNotFound,
    DocumentStore,
    Hit,
    HybridSearch,
    NearestSearch,
    StoreError,
    StoreUnavailable,
    UpsertReport,
    awaited_vector,
    hit_from_row,
)
from agents.retriever.store.weaviate.connection import open_client, quietly_close, server_version
from agents.retriever.store.weaviate.errors import brief, translate
from agents.retriever.store.weaviate.schema import (
    NAMESPACE,
    PROPERTIES,
    RETURNED,
    TENANT,
    VECTOR,
    class_description,
    class_name,
    collection_name,
    document_filter,
    properties,
    where_filter,
    whole_document_hash,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Weaviate before 1.33 has no ``Not`` / ``ContainsNone`` filter operators.
CONTAINS_NONE_SINCE = (1, 33, 0)
HASH_BATCH = 200


class WeaviateStore(DocumentStore):
    """Collections as Weaviate classes on a server at ``url`` (REST) and ``grpc_port``."""

    def __init__(
        self,
        url: str,
        *,
        dim: int,
        grpc_port: int | None = None,
        grpc_secure: bool | None = None,
        api_key: str | None = None,
        multi_tenancy: bool | None = None,
        tenant: str | None = None,
        namespace: str = "",
        timeout_s: float = 30.0,
        insert_timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        batch_size: int = 256,
        delete_limit: int = 10_000,
    ) -> None:
        """Configure (nothing connects until the first call).

        ``multi_tenancy`` defaults to "on when a ``tenant`` is given". ``namespace`` (a
        capitalised word) prefixes the class names so several deployments can share a
        server. ``delete_limit`` must match the server's ``QUERY_MAXIMUM_RESULTS`` (how many
        objects one batch delete removes at most).
        """
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(
                f"WEAVIATE_URL {url!r} is not an http(s) URL; use e.g. http://localhost:8080"
            )
        self.multi_tenancy = tenant is not None if multi_tenancy is None else multi_tenancy
        if self.multi_tenancy and not tenant:
            raise StoreError(
                "Weaviate multi-tenancy needs a tenant; set SCRIPTORIUM_WEAVIATE_TENANT"
            )
        if tenant is not None and not TENANT.match(tenant):
            raise StoreError(
                f"invalid Weaviate tenant {tenant!r}: use 1-64 letters, digits, - or _"
            )
        if not self.multi_tenancy and tenant is not None:
            raise StoreError("a Weaviate tenant was given but multi-tenancy is switched off")
        if namespace and not NAMESPACE.match(namespace):
            raise StoreError(
                f"invalid Weaviate namespace {namespace!r}: use a capital letter, then letters "
                "or digits (at most 31 characters)"
            )
        self.url = url.rstrip("/")
        self.dim = dim
        self.grpc_port = grpc_port or 50051
        self.grpc_secure = parsed.scheme == "https" if grpc_secure is None else grpc_secure
        self.api_key = api_key
        self.tenant = tenant if self.multi_tenancy else None
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.insert_timeout_s = insert_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.batch_size = batch_size
        self.delete_limit = delete_limit
        self._client: WeaviateAsyncClient | None = None
        self._version: tuple[int, int, int] = (0, 0, 0)
        self._ready: set[str] = set()
        self._lock = asyncio.Lock()
        self._schema_lock = asyncio.Lock()

    # -- connection and errors

    @property
    def _where(self) -> str:
        return f"Weaviate at {self.url} (gRPC port {self.grpc_port})"

    async def _connect(self) -> WeaviateAsyncClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            client, meta = await open_client(
                self.url,
                grpc_port=self.grpc_port,
                grpc_secure=self.grpc_secure,
                api_key=self.api_key,
                connect_timeout_s=self.connect_timeout_s,
                timeout_s=self.timeout_s,
                insert_timeout_s=self.insert_timeout_s,
                translate=lambda exc: self._translate(exc, "connect"),
            )
            self._version = server_version(str(meta.get("version", "")))
            self._client = client
            log.info(
                "connected to Weaviate", extra={"url": self.url, "version": meta.get("version")}
            )
            return client

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        """A client failure as StoreUnavailable / StoreError saying what to do."""
        return translate(exc, what, where=self._where, url=self.url)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], *, within_s: float) -> T:
        """``call()`` within ``within_s`` seconds, its failures translated."""
        try:
            async with asyncio.timeout(within_s):
                return await call()
        except WeaviateInsertManyAllFailedError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    # -- collections

    async def _schema(self) -> dict[str, CollectionConfigSimple]:
        """Every class on the server with its description (one ``GET /v1/schema``)."""
        client = await self._connect()
        return await self._call(
            "read the schema",
            lambda: client.collections.list_all(simple=True),
            within_s=self.timeout_s,
        )

    async def _class_config(self, name: str) -> CollectionConfig:
        """One class's full configuration, multi-tenancy included (``GET /v1/schema/{name}``)."""
        client = await self._connect()
        return await self._call(
            "read the schema",
            lambda: client.collections.export_config(name),
            within_s=self.timeout_s,
        )

    async def _collection(self, collection: str, *, create: bool) -> CollectionAsync:
        """A handle on our class (and tenant); created if ``create``, else StoreError."""
        name = class_name(collection, self.namespace)
        client = await self._connect()
        handle = client.collections.use(name)
        if self.tenant is not None:
            handle = handle.with_tenant(self.tenant)
        if collection in self._ready:
            return handle
        async with self._schema_lock:
            await self._prepare(collection, name, create=create)
        return handle

    async def _prepare(self, collection: str, name: str, *, create: bool) -> None:
        """Check (or create) the class and the tenant of ``collection`` once per store."""
        if collection in self._ready:
            return
        config = await self._schema()
        same = [(cls, cfg) for cls, cfg in config.items() if cls.lower() == name.lower()]
        if not same:
            if not create:
                raise CollectionNotFound(collection)
            await self._create_class(collection, name)
        else:
            existing, cfg = same[0]
            if collection_name(existing, cfg.description, self.namespace) != collection:
                raise StoreError(
                    f"collection {collection!r} would be Weaviate class {name!r}, but class "
                    f"{existing!r} exists and is not that collection (class names ignore case, and "
                    "classes not made by Scriptorium are left alone); choose another collection "
                    "name or namespace"
                )
            await self._check_tenancy(collection, name)
        if self.tenant is not None:
            await self._ensure_tenant(collection, name, create=create)
        self._ready.add(collection)

    async def _create_class(self, collection: str, name: str) -> None:
        client = await self._connect()
        log.info("creating Weaviate class", extra={"collection": collection, "class": name})
        try:
            await self._create(client, collection, name)
        except StoreUnavailable:
            raise
        except StoreError:
            # Another process may have created it meanwhile; that is fine if it is ours.
            config = await self._class_config(name)
            if collection_name(name, config.description, self.namespace) != collection:
                raise

    async def _create(self, client: WeaviateAsyncClient, collection: str, name: str) -> None:
        await self._call(
            f"create collection {collection!r}",
            lambda: client.collections.create(
                name,
                description=class_description(collection),
                properties=PROPERTIES,
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR,
                    vector_index_config=Configure.VectorIndex.hnsw(
                        distance_metric=VectorDistances.COSINE
                    ),
                ),
                inverted_index_config=Configure.inverted_index(bm25_b=0.75, bm25_k1=1.2),
                multi_tenancy_config=Configure.multi_tenancy(
                    enabled=True, auto_tenant_creation=False, auto_tenant_activation=False
                )
                if self.multi_tenancy
                else None,
            ),
            within_s=self.timeout_s,
        )

    async def _check_tenancy(self, collection: str, name: str) -> None:
        config = await self._class_config(name)
        if config.multi_tenancy_config.enabled != self.multi_tenancy:
            want, have = ("on", "off") if self.multi_tenancy else ("off", "on")
            raise StoreError(
                f"collection {collection!r} has Weaviate multi-tenancy {have} but this store has "
                f"it {want}; set (or unset) SCRIPTORIUM_WEAVIATE_TENANT to match, or use another "
                "collection"
            )

    async def _ensure_tenant(self, collection: str, name: str, *, create: bool) -> None:
        assert self.tenant is not None
        tenant = self.tenant
        if await self._has_tenant(name):
            return
        if not create:
            raise CollectionNotFound(
                collection,
                f"collection {collection!r} has no data for tenant {tenant!r}; ingest something "
                "into it first",
            )
        tenants = (await self._connect()).collections.use(name).tenants
        await self._call(
            f"create tenant {tenant!r}", lambda: tenants.create(tenant), within_s=self.timeout_s
        )

    async def _ensure_collection(self, collection: str) -> None:
        await self._collection(collection, create=True)

    async def _collections(self) -> list[str]:
        config = await self._schema()
        names = {
            cls: name
            for cls, cfg in config.items()
            if (name := collection_name(cls, cfg.description, self.namespace)) is not None
        }
        if self.tenant is None:
            return list(names.values())
        return [name for cls, name in names.items() if await self._has_tenant(cls)]

    async def _has_tenant(self, weaviate_class: str) -> bool:
        """Whether our tenant exists in the class (False for classes without multi-tenancy)."""
        assert self.tenant is not None
        tenant = self.tenant
        tenants = (await self._connect()).collections.use(weaviate_class).tenants
        try:
            exists: bool = await self._call(
                "look up the tenant", lambda: tenants.exists(tenant), within_s=self.timeout_s
            )
        except StoreUnavailable:
            raise
        except StoreError:
            return False
        return exists

    async def _drop_collection(self, collection: str) -> None:
        name = class_name(collection, self.namespace)
        config = await self._schema()
        client = await self._connect()
        self._ready.discard(collection)
        if name not in config:
            return
        if collection_name(name, config[name].description, self.namespace) != collection:
            raise StoreError(
                f"Weaviate class {name!r} was not made by Scriptorium for {collection!r}; "
                "not dropping it"
            )
        if self.tenant is not None:
            tenants = client.collections.use(name).tenants
            tenant = self.tenant
            await self._call(
                f"remove tenant {tenant!r}", lambda: tenants.remove(tenant), within_s=self.timeout_s
            )
            left = await self._call("list tenants", tenants.get, within_s=self.timeout_s)
            if left:
                return
        await self._call(
            f"drop collection {collection!r}",
            lambda: client.collections.delete(name),
            within_s=self.timeout_s,
        )

    # -- writes

    async def _upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        return await self._write(collection, chunks, counts={})

    async def _write(
        self, collection: str, chunks: Sequence[Chunk], *, counts: Mapping[str, int]
    ) -> UpsertReport:
        """Batch-import ``chunks``; objects the server refuses are reported, not raised."""
        unique = list({c.id: c for c in chunks}.values())
        if not unique:
            return UpsertReport()
        handle = await self._collection(collection, create=True)
        report = UpsertReport()
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            refused = await self._insert(handle, batch, counts)
            report.errors.update(refused)
            report.written += len(batch) - len(refused)
        if report.errors:
            log.warning(
                "Weaviate refused chunks",
                extra={"collection": collection, "refused": len(report.errors)},
            )
        return report

    async def _insert(
        self, handle: CollectionAsync, batch: Sequence[Chunk], counts: Mapping[str, int]
    ) -> dict[str, str]:
        """One gRPC batch; the chunks the server refused, with its reasons."""
        objects = [
            DataObject(
                properties=properties(c, counts.get(c.document_id, 0)),
                uuid=generate_uuid5(c.id),
                vector={VECTOR: np.asarray(c.vector, dtype=np.float32).tolist()},
            )
            for c in batch
        ]
        try:
            result = await self._call(
                f"write {len(batch)} chunks",
                lambda: handle.data.insert_many(objects),
                within_s=self.insert_timeout_s,
            )
        except WeaviateInsertManyAllFailedError as exc:
            # The client raises instead of returning per-object errors when every object
            # fails; its message holds the set of the server's reasons.
            reason = f"refused by Weaviate: {brief(exc)}"
            return {c.id: reason for c in batch}
        return {batch[i].id: f"refused by Weaviate: {e.message}" for i, e in result.errors.items()}

    async def _replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        """Write the new chunks, then delete each document's others (not atomic, see module)."""
        chunks = [c for doc_chunks in documents.values() for c in doc_chunks]
        counts = {doc: len({c.id for c in doc_chunks}) for doc, doc_chunks in documents.items()}
        report = await self._write(collection, chunks, counts=counts)
        handle = await self._collection(collection, create=True)
        failed = {c.document_id for c in chunks if c.id in report.errors}
        for document_id, doc_chunks in documents.items():
            if document_id in failed:
                continue  # keep what is there: missing or mixed chunks read as "not stored"
            await self._delete_stale(handle, document_id, sorted({c.id for c in doc_chunks}))
        return report

    async def _delete_stale(
        self, handle: CollectionAsync, document_id: str, keep: list[str]
    ) -> None:
        document = document_filter(document_id)
        if not keep:
            await self._delete_where(handle, document, f"document {document_id!r}")
            return
        if self._version >= CONTAINS_NONE_SINCE:
            where = document & Filter.by_property("chunk_id").contains_none(keep)
            await self._delete_where(handle, where, f"old chunks of {document_id!r}")
            return
        # Older servers: list the document's chunks and delete the others by id.
        found = await self._call(
            f"list the chunks of {document_id!r}",
            lambda: handle.query.fetch_objects(
                filters=document,
                limit=self.delete_limit,
                return_properties=["chunk_id"],
            ),
            within_s=self.timeout_s,
        )
        if len(found.objects) >= self.delete_limit:
            raise StoreError(
                f"document {document_id!r} has more than {self.delete_limit} chunks; replacing "
                "it needs Weaviate 1.33 or newer"
            )
        kept = set(keep)
        stale = sorted({str(o.properties["chunk_id"]) for o in found.objects} - kept)
        if stale:
            where = document & Filter.by_property("chunk_id").contains_any(stale)
            await self._delete_where(handle, where, f"old chunks of {document_id!r}")

    async def _delete_where(self, handle: CollectionAsync, where: FilterReturn, what: str) -> int:
        """Delete everything ``where`` matches (in rounds of ``delete_limit``); the count."""
        deleted = 0
        while True:
            result = await self._call(
                f"delete {what}",
                lambda: handle.data.delete_many(where=where),
                within_s=self.insert_timeout_s,
            )
            if result.failed:
                raise StoreError(
                    f"{self._where} failed to delete {result.failed} objects of {what}; try again"
                )
            deleted += result.successful
            if result.matches < self.delete_limit or result.successful == 0:
                return deleted

    async def _delete_document(self, collection: str, document_id: str) -> int:
        handle = await self._collection(collection, create=False)
        document = document_filter(document_id)
        return await self._delete_where(handle, document, f"document {document_id!r}")

    # -- reads

    async def _document_hashes(
        self, collection: str, document_ids: Sequence[str]
    ) -> dict[str, str]:
        """Hashes of the documents stored whole: one hash, one chunk count, all chunks there."""
        handle = await self._collection(collection, create=False)
        unique = sorted(set(document_ids))
        hashes: dict[str, str] = {}
        for start in range(0, len(unique), HASH_BATCH):
            hashes.update(await self._hashes(handle, unique[start : start + HASH_BATCH]))
        return hashes

    async def _hashes(self, handle: CollectionAsync, document_ids: list[str]) -> dict[str, str]:
        """One aggregation: per document, its hashes, chunk counts and number of objects."""
        result = await self._call(
            "read document hashes",
            lambda: handle.aggregate.over_all(
                filters=Filter.by_property("document_id").contains_any(document_ids),
                group_by=GroupByAggregate(prop="document_id", limit=len(document_ids)),
                total_count=True,
                return_metrics=[
                    Metrics("doc_hash").text(
                        top_occurrences_count=True, top_occurrences_value=True, limit=2
                    ),
                    Metrics("doc_chunks").integer(minimum=True, maximum=True),
                ],
            ),
            within_s=self.timeout_s,
        )
        hashes: dict[str, str] = {}
        for group in result.groups:
            digest = whole_document_hash(group.properties, group.total_count)
            if digest is not None:
                hashes[str(group.grouped_by.value)] = digest
        return hashes

    async def _count(self, collection: str, *, document_id: str | None) -> int:
        handle = await self._collection(collection, create=False)
        where = None if document_id is None else document_filter(document_id)
        result = await self._call(
            "count chunks",
            lambda: handle.aggregate.over_all(total_count=True, filters=where),
            within_s=self.timeout_s,
        )
        return int(result.total_count or 0)

    async def _optimize(self, collection: str) -> None:
        """Nothing to do: Weaviate keeps its HNSW and inverted indexes current as it writes."""

    async def _query(self, collection: str, search: HybridSearch) -> list[Hit]:
        """Weaviate's hybrid search with relative score fusion; scores are the fused ones."""
        where = where_filter(search.filters)
        values: list[float] = self._query_vector(await awaited_vector(search.vector)).tolist()
        return await self._search(
            collection,
            "run a hybrid query",
            search.k,
            lambda handle: handle.query.hybrid(
                query=search.text,
                vector=values,
                alpha=search.alpha,
                limit=search.k,
                filters=where,
                fusion_type=HybridFusion.RELATIVE_SCORE,
                query_properties=["text"],
                target_vector=VECTOR,
                return_metadata=MetadataQuery(score=True),
                return_properties=RETURNED,
            ),
            score=lambda metadata: float(metadata.score or 0.0),
        )

    async def _vector_query(self, collection: str, search: NearestSearch) -> list[Hit]:
        """Nearest neighbours, score ``1 - cosine distance``.

        ``exact`` cannot bypass HNSW in Weaviate: the query is the same (filtered queries
        below the index's ``flatSearchCutoff`` are brute force on the server anyway).
        """
        where = where_filter(search.filters)
        values: list[float] = search.vector.tolist()
        return await self._search(
            collection,
            "run a vector query",
            search.k,
            lambda handle: handle.query.near_vector(
                near_vector=values,
                limit=search.k,
                filters=where,
                target_vector=VECTOR,
                return_metadata=MetadataQuery(distance=True),
                return_properties=RETURNED,
            ),
            score=lambda metadata: 1.0 - float(metadata.distance or 0.0),
        )

    async def _search(
        self,
        collection: str,
        what: str,
        k: int,
        run: Callable[[CollectionAsync], Awaitable[Any]],
        *,
        score: Callable[[Any], float],
    ) -> list[Hit]:
        """Run a query on the collection's handle; its objects as hits scored by ``score``."""
        handle = await self._collection(collection, create=False)
        if k <= 0:
            return []
        result = await self._call(what, lambda: run(handle), within_s=self.timeout_s)
        return [hit_from_row(o.properties, score(o.metadata)) for o in result.objects]

    async def close(self) -> None:
        client, self._client = self._client, None
        self._ready.clear()
        if client is not None:
            await quietly_close(client)
