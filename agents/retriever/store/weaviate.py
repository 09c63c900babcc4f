"""The server backend: Weaviate, through the v4 client (async; REST for the schema, gRPC for data).

Each of our collections is one Weaviate class holding its chunks as objects with our own
properties and our own vectors (the named vector ``default``, HNSW, cosine distance; no
vectorizer module). ``text`` is word-tokenized for BM25; the filterable fields are
field-tokenized. An object's UUID is ``generate_uuid5(chunk.id)``, so writing a chunk again
overwrites it.

Names. Weaviate class names start with a capital letter and are unique *ignoring case*, so a
collection maps to ``<Namespace>_<name>`` (or, without a namespace, to its name with the first
letter capitalised). The class description records our exact name, which is how
:meth:`WeaviateStore.collections` maps classes back and how a collision (``docs`` after
``Docs``) is refused instead of silently shared. Classes without that description were not
made by Scriptorium and are neither listed nor touched.

Writes are not atomic. :meth:`WeaviateStore.replace_documents` writes the new chunks first
and then deletes the document's other chunks. Every object carries the document's hash and
its chunk count, and :meth:`WeaviateStore.document_hashes` reports a document only when all
of its objects agree on both and the count is complete, so a crash (or a refused object)
half-way shows as "not stored" and the document is ingested again.

Multi-tenancy (optional): the class is shared, each store writes and reads its own tenant,
created on demand; dropping a collection removes the tenant (and the class once no tenant is
left).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import numpy as np
from grpc import StatusCode
from grpc.aio import AioRpcError
from weaviate import WeaviateAsyncClient
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, FilterReturn, HybridFusion, MetadataQuery, Metrics
from weaviate.collections import CollectionAsync
from weaviate.collections.classes.aggregate import AggregateInteger, AggregateText, GroupByAggregate
from weaviate.connect import ConnectionParams
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateInsertManyAllFailedError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)
from weaviate.util import generate_uuid5

from agents.retriever.store.base import (
    Chunk,
    CollectionNotFound,
    DocumentStore,
    FilterValue,
    Hit,
    QueryVector,
    StoreError,
    StoreUnavailable,
    UpsertReport,
    Vector,
    check_collection,
    check_filters,
    resolve,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The named vector that holds our embeddings.
VECTOR = "default"
NAMESPACE = re.compile(r"^[A-Z][A-Za-z0-9]{0,30}$")
TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DESCRIPTION = re.compile(r"^Scriptorium collection '([A-Za-z][A-Za-z0-9_]{0,62})'")
#: Properties a hit is built from.
RETURNED = [
    "chunk_id",
    "document_id",
    "text",
    "source",
    "start",
    "end",
    "title",
    "heading",
    "metadata",
]
#: Weaviate before 1.33 has no ``Not`` / ``ContainsNone`` filter operators.
CONTAINS_NONE_SINCE = (1, 33, 0)
HASH_BATCH = 200
#: Client failures that mean "the server cannot be reached" (not "it refused").
UNREACHABLE = (
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
    WeaviateRetryError,
    WeaviateClosedClientError,
    httpx.TransportError,
    OSError,
)


def _text(name: str, *, filterable: bool = True) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT,
        tokenization=Tokenization.FIELD,
        index_filterable=filterable,
        index_searchable=False,
    )


def _int(name: str, *, filterable: bool = False) -> Property:
    return Property(
        name=name, data_type=DataType.INT, index_filterable=filterable, index_range_filters=False
    )


PROPERTIES = [
    _text("chunk_id"),
    _text("document_id"),
    Property(
        name="text",
        data_type=DataType.TEXT,
        tokenization=Tokenization.WORD,
        index_filterable=False,
        index_searchable=True,
    ),
    _text("source"),
    _int("start"),
    _int("end"),
    _text("title"),
    _text("heading"),
    _text("kind"),
    Property(
        name="tags",
        data_type=DataType.TEXT_ARRAY,
        tokenization=Tokenization.FIELD,
        index_filterable=True,
        index_searchable=False,
    ),
    _text("doc_hash"),
    _int("doc_chunks", filterable=True),
    _text("metadata", filterable=False),
]


# --------------------------------------------------------------------------- names


def class_name(collection: str, namespace: str = "") -> str:
    """The Weaviate class that holds ``collection`` (``Docs`` / ``<Namespace>_docs``)."""
    check_collection(collection)
    if namespace:
        return f"{namespace}_{collection}"
    return collection[0].upper() + collection[1:]


def class_description(collection: str) -> str:
    """The class description that marks a class as holding our ``collection``."""
    return f"Scriptorium collection '{collection}': document chunks with self-provided vectors"


def collection_name(
    weaviate_class: str, description: str | None, namespace: str = ""
) -> str | None:
    """Our collection held by ``weaviate_class`` (``None``: not a Scriptorium class here)."""
    match = DESCRIPTION.match(description or "")
    if match is None:
        return None
    name = match.group(1)
    return name if class_name(name, namespace) == weaviate_class else None


# --------------------------------------------------------------------------- filters


def where_filter(filters: Mapping[str, FilterValue] | None) -> FilterReturn | None:
    """Our filters as a Weaviate filter: equality, a list means any of, ``tags`` has the tag."""
    if not filters:
        return None
    check_filters(filters)
    parts: list[FilterReturn] = []
    for name, value in sorted(filters.items()):
        values = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        if not values:
            raise StoreError(f"filter on {name} lists no values; give at least one")
        prop = Filter.by_property(name)
        if name == "tags" or len(values) > 1:
            parts.append(prop.contains_any(values))
        else:
            parts.append(prop.equal(values[0]))
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


def _document(document_id: str) -> FilterReturn:
    return Filter.by_property("document_id").equal(document_id)


# --------------------------------------------------------------------------- the store


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
            client = WeaviateAsyncClient(
                connection_params=ConnectionParams.from_url(
                    self.url, self.grpc_port, self.grpc_secure
                ),
                auth_client_secret=Auth.api_key(self.api_key) if self.api_key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(
                        init=self.connect_timeout_s,
                        query=self.timeout_s,
                        insert=self.insert_timeout_s,
                    )
                ),
                # Our own checks below: the client's would also ask PyPI for its latest version.
                skip_init_checks=True,
            )
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await client.connect()  # GET /v1/meta: REST reachable, version >= 1.27
                    ping = client._connection._ping_grpc("async")  # the gRPC health check
                    if ping is not None:
                        await ping
                    meta = await client.get_meta()
            except asyncio.CancelledError:
                await _quietly_close(client)
                raise
            except Exception as exc:
                await _quietly_close(client)
                raise self._translate(exc, "connect") from exc
            self._version = _version(str(meta.get("version", "")))
            self._client = client
            log.info(
                "connected to Weaviate", extra={"url": self.url, "version": meta.get("version")}
            )
            return client

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        """A client failure as StoreUnavailable / StoreError saying what to do."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, TimeoutError):
            return StoreUnavailable(
                f"{self._where} did not answer ({what}) in time; check the server is up and "
                "not overloaded, and that WEAVIATE_URL points at it"
            )
        code = _rpc_code(exc)
        if (
            isinstance(exc, InsufficientPermissionsError)
            or _status(exc) in (401, 403)
            or code in (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED)
        ):
            return StoreError(
                f"{self._where} refused to {what}: not authorised; check WEAVIATE_API_KEY "
                f"({_brief(exc)})"
            )
        if isinstance(exc, WeaviateStartUpError) and "is not supported" in str(exc):
            return StoreError(f"{_brief(exc)} Upgrade the Weaviate server at {self.url}.")
        if isinstance(exc, UNREACHABLE) or code in (
            StatusCode.UNAVAILABLE,
            StatusCode.DEADLINE_EXCEEDED,
        ):
            return StoreUnavailable(
                f"cannot reach {self._where} ({what}): {_brief(exc)}; check WEAVIATE_URL "
                "and SCRIPTORIUM_WEAVIATE_GRPC_PORT, and that the server is up"
            )
        if isinstance(exc, WeaviateBaseError):
            return StoreError(f"{self._where} failed to {what}: {_brief(exc)}")
        return exc

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
        client = await self._connect()
        config = await self._call(
            "read the schema",
            lambda: client.collections.list_all(simple=True),
            within_s=self.timeout_s,
        )
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
            config = await self._call(
                "read the schema",
                lambda: client.collections.export_config(name),
                within_s=self.timeout_s,
            )
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
        client = await self._connect()
        config = await self._call(
            "read the schema",
            lambda: client.collections.export_config(name),
            within_s=self.timeout_s,
        )
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

    async def ensure_collection(self, collection: str) -> None:
        await self._collection(collection, create=True)

    async def collections(self) -> list[str]:
        client = await self._connect()
        config = await self._call(
            "list collections",
            lambda: client.collections.list_all(simple=True),
            within_s=self.timeout_s,
        )
        names = {
            cls: name
            for cls, cfg in config.items()
            if (name := collection_name(cls, cfg.description, self.namespace)) is not None
        }
        if self.tenant is None:
            return sorted(names.values())
        mine = [name for cls, name in names.items() if await self._has_tenant(cls)]
        return sorted(mine)

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

    async def drop_collection(self, collection: str) -> None:
        name = class_name(collection, self.namespace)
        client = await self._connect()
        config = await self._call(
            "list collections",
            lambda: client.collections.list_all(simple=True),
            within_s=self.timeout_s,
        )
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

    def _check_vectors(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            if chunk.vector.shape != (self.dim,):
                raise StoreError(
                    f"chunk {chunk.id} has a vector of shape {chunk.vector.shape}; "
                    f"this store holds {self.dim}-d vectors"
                )

    async def upsert(self, collection: str, chunks: Sequence[Chunk]) -> UpsertReport:
        return await self._write(collection, chunks, counts={})

    async def _write(
        self, collection: str, chunks: Sequence[Chunk], *, counts: Mapping[str, int]
    ) -> UpsertReport:
        """Batch-import ``chunks``; objects the server refuses are reported, not raised."""
        unique = list({c.id: c for c in chunks}.values())
        if not unique:
            return UpsertReport()
        self._check_vectors(unique)
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
                properties=_properties(c, counts.get(c.document_id, 0)),
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
            reason = f"refused by Weaviate: {_brief(exc)}"
            return {c.id: reason for c in batch}
        return {batch[i].id: f"refused by Weaviate: {e.message}" for i, e in result.errors.items()}

    async def replace_documents(
        self, collection: str, documents: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        """Write the new chunks, then delete each document's others (not atomic, see module)."""
        for document_id, chunks in documents.items():
            if any(c.document_id != document_id for c in chunks):
                raise StoreError(f"chunks filed under {document_id!r} belong to another document")
        if not documents:
            return UpsertReport()
        chunks = [c for doc_chunks in documents.values() for c in doc_chunks]
        self._check_vectors(chunks)
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
        if not keep:
            await self._delete_where(handle, _document(document_id), f"document {document_id!r}")
            return
        if self._version >= CONTAINS_NONE_SINCE:
            where = _document(document_id) & Filter.by_property("chunk_id").contains_none(keep)
            await self._delete_where(handle, where, f"old chunks of {document_id!r}")
            return
        # Older servers: list the document's chunks and delete the others by id.
        found = await self._call(
            f"list the chunks of {document_id!r}",
            lambda: handle.query.fetch_objects(
                filters=_document(document_id),
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
            where = _document(document_id) & Filter.by_property("chunk_id").contains_any(stale)
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

    async def delete_document(self, collection: str, document_id: str) -> int:
        handle = await self._collection(collection, create=False)
        return await self._delete_where(handle, _document(document_id), f"document {document_id!r}")

    # -- reads

    async def document_hashes(self, collection: str, document_ids: Sequence[str]) -> dict[str, str]:
        """Hashes of the documents stored whole: one hash, one chunk count, all chunks there."""
        if not document_ids:
            return {}
        try:
            handle = await self._collection(collection, create=False)
        except CollectionNotFound:
            return {}
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
            digest = _whole_document_hash(group.properties, group.total_count)
            if digest is not None:
                hashes[str(group.grouped_by.value)] = digest
        return hashes

    async def count(self, collection: str, *, document_id: str | None = None) -> int:
        handle = await self._collection(collection, create=False)
        where = None if document_id is None else _document(document_id)
        result = await self._call(
            "count chunks",
            lambda: handle.aggregate.over_all(total_count=True, filters=where),
            within_s=self.timeout_s,
        )
        return int(result.total_count or 0)

    async def optimize(self, collection: str) -> None:
        """Nothing to do: Weaviate keeps its HNSW and inverted indexes current as it writes."""

    def _query_vector(self, vector: Vector) -> list[float]:
        array = np.asarray(vector, dtype=np.float32)
        if array.shape != (self.dim,):
            raise StoreError(
                f"query vector has shape {array.shape}; this store holds {self.dim}-d vectors"
            )
        values: list[float] = array.tolist()
        return values

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
        """Weaviate's hybrid search with relative score fusion; scores are the fused ones."""
        where = where_filter(filters)
        values = self._query_vector(await resolve(vector))
        handle = await self._collection(collection, create=False)
        if k <= 0:
            return []
        result = await self._call(
            "run a hybrid query",
            lambda: handle.query.hybrid(
                query=text,
                vector=values,
                alpha=min(max(float(alpha), 0.0), 1.0),
                limit=k,
                filters=where,
                fusion_type=HybridFusion.RELATIVE_SCORE,
                query_properties=["text"],
                target_vector=VECTOR,
                return_metadata=MetadataQuery(score=True),
                return_properties=RETURNED,
            ),
            within_s=self.timeout_s,
        )
        return [_hit(o.properties, float(o.metadata.score or 0.0)) for o in result.objects]

    async def vector_query(
        self,
        collection: str,
        vector: Vector,
        *,
        k: int = 10,
        exact: bool = False,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours, score ``1 - cosine distance``.

        ``exact`` cannot bypass HNSW in Weaviate: the query is the same (filtered queries
        below the index's ``flatSearchCutoff`` are brute force on the server anyway).
        """
        where = where_filter(filters)
        values = self._query_vector(vector)
        handle = await self._collection(collection, create=False)
        if k <= 0:
            return []
        result = await self._call(
            "run a vector query",
            lambda: handle.query.near_vector(
                near_vector=values,
                limit=k,
                filters=where,
                target_vector=VECTOR,
                return_metadata=MetadataQuery(distance=True),
                return_properties=RETURNED,
            ),
            within_s=self.timeout_s,
        )
        return [_hit(o.properties, 1.0 - float(o.metadata.distance or 0.0)) for o in result.objects]

    async def close(self) -> None:
        client, self._client = self._client, None
        self._ready.clear()
        if client is not None:
            await _quietly_close(client)


# --------------------------------------------------------------------------- helpers


def _properties(chunk: Chunk, doc_chunks: int) -> dict[str, Any]:
    return {
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "text": chunk.text,
        "source": chunk.source,
        "start": int(chunk.start),
        "end": int(chunk.end),
        "title": chunk.title,
        "heading": chunk.heading,
        "kind": chunk.kind,
        "tags": [str(t) for t in chunk.tags],
        "doc_hash": chunk.doc_hash,
        "doc_chunks": doc_chunks,
        "metadata": json.dumps(dict(chunk.metadata), default=str),
    }


def _hit(props: Mapping[str, Any], score: float) -> Hit:
    raw = props.get("metadata")
    try:
        metadata = json.loads(raw) if isinstance(raw, str) and raw else {}
    except json.JSONDecodeError:
        metadata = {}
    return Hit(
        chunk_id=str(props["chunk_id"]),
        document_id=str(props["document_id"]),
        source=str(props.get("source") or ""),
        text=str(props.get("text") or ""),
        score=score,
        start=int(props.get("start") or 0),
        end=int(props.get("end") or 0),
        title=str(props.get("title") or ""),
        heading=str(props.get("heading") or ""),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


def _whole_document_hash(metrics: Mapping[str, Any], total: int | None) -> str | None:
    """The document's hash if its objects agree on hash and chunk count and none is missing."""
    hashes, counts = metrics.get("doc_hash"), metrics.get("doc_chunks")
    if not isinstance(hashes, AggregateText) or not isinstance(counts, AggregateInteger):
        return None
    top = hashes.top_occurrences
    if len(top) != 1 or top[0].value is None or top[0].count != total:
        return None
    low, high = counts.minimum, counts.maximum
    if low != high or (low and low != total):
        return None  # chunk counts disagree, or chunks are missing (0 = written by upsert)
    return str(top[0].value)


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in text.split("-")[0].split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return (parts[0], parts[1], parts[2])


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, UnexpectedStatusCodeError):
        return exc.status_code
    return None


def _rpc_code(exc: BaseException) -> StatusCode | None:
    """The gRPC status behind a client exception (it wraps AioRpcError as cause or context)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, AioRpcError):
            code: StatusCode = seen.code()
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def _brief(exc: BaseException) -> str:
    """The exception message on one line, cut to 300 characters."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


async def _quietly_close(client: WeaviateAsyncClient) -> None:
    try:
        async with asyncio.timeout(5):
            await client.close()
    except Exception:  # closing a half-open client must not hide the real error
        log.debug("closing the Weaviate client failed", exc_info=True)
