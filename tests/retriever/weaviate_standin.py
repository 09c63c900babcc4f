"""TEST DOUBLE — stands in for a Weaviate server at its HTTP + gRPC boundary because none can
run here; the live suite runs against a real server when WEAVIATE_URL is set.

No Weaviate binary can be installed in this sandbox (it is not on PyPI, npm or Debian, and
embedded mode downloads it from GitHub), so — like weaviate-python-client's own
``mock_tests/`` — this module answers the real client on its real wire protocols: a werkzeug
HTTP server for the REST API and a ``grpc.server`` running a ``WeaviateServicer`` subclass
built from the client's own protobuf stubs. Nothing in :mod:`agents.retriever.store.weaviate`
knows it is talking to a double.

Implemented (in memory, one lock, Weaviate's semantics where we rely on them):

* REST: ``/v1/.well-known/{ready,live,openid-configuration}``, ``/v1/meta`` (a configurable
  version, default 1.36.9), ``/v1/schema`` (create with defaults filled in like the server,
  get, list, delete; class names must start upper-case and are unique ignoring case),
  ``/v1/schema/{class}/tenants`` (list, add, remove, exists); an optional API key (Bearer).
* gRPC ``Search``: fetch (by uuid), BM25 (word tokens, lower case, the ``en`` stop words
  dropped from the query, k1/b from the schema, IDF over the tenant's objects), near_vector
  (cosine distance, certainty/distance cut-offs), hybrid with relative score fusion (min-max
  normalised lists combined with ``alpha``; ``alpha`` 0 / 1 skip the other search), filters,
  limit/offset; returns the requested properties and uuid/score/distance/certainty/vector.
* gRPC ``BatchObjects`` with per-object errors (unknown property, wrong type, unknown named
  vector, a vector whose length differs from the tenant's existing vectors — Weaviate's own
  message — missing tenant), ``BatchDelete`` (filter, dry run, verbose, capped at
  ``query_maximum_results`` like ``QUERY_MAXIMUM_RESULTS``), ``TenantsGet``, ``Aggregate``
  (count, group by one property, text top occurrences, integer metrics), and the gRPC
  health service.
* Filters: Equal, NotEqual, And, Or, ContainsAny/All, LessThan…, Like, IsNull, and — from
  1.33 only, as on a real server — Not and ContainsNone.

Not implemented: vectorizer/generative/reranker modules, near_text/near_object/media
searches, ranked fusion, group-by searches, references, sorting, cursors (``after``), batch
streaming, replication, RBAC, GraphQL; HNSW (every vector search is exact). Unknown routes
answer 404 and unimplemented RPCs UNIMPLEMENTED, so a client change shows up as a failure.

``refuse_when`` lets a test make the "server" refuse chosen objects, as a real server does
when, for example, a tenant is being offloaded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import re
import struct
import threading
import time
import uuid as uuid_lib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from copy import deepcopy
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf import json_format
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    batch_delete_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

Props = dict[str, Any]
Refusal = Callable[[str, Props], str | None]
WORD = re.compile(r"[^\W_]+")
CLASS_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
_EN = (
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with"
)
#: Weaviate's ``en`` stop-word preset (Lucene's English set); removed from BM25 queries.
EN_STOPWORDS = frozenset(_EN.split())
Op = base_pb2.Filters


class RequestFailed(Exception):
    """A request the server refuses; carries the HTTP status / gRPC code and the message."""

    def __init__(self, message: str, status: int = 422, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- text & vectors


def tokens(text: str) -> list[str]:
    """Weaviate's ``word`` tokenization: alphanumeric runs, lower-cased."""
    return [t.lower() for t in WORD.findall(text)]


def property_tokens(value: str, tokenization: str) -> list[str]:
    if tokenization == "field":
        return [value.strip()]
    if tokenization == "whitespace":
        return value.split()
    if tokenization == "lowercase":
        return value.lower().split()
    return tokens(value)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 if norm == 0 else 1.0 - float(np.dot(a, b)) / norm


def unpack_floats(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


# --------------------------------------------------------------------------- storage


@dataclass
class StoredObject:
    uuid: str
    properties: Props
    vectors: dict[str, np.ndarray]


@dataclass
class StoredClass:
    schema: dict[str, Any]
    shards: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    #: (tenant, vector name) -> the length the vector index was created with
    lengths: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.schema["class"])

    @property
    def multi_tenant(self) -> bool:
        return bool(self.schema["multiTenancyConfig"]["enabled"])

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.schema["properties"]}

    @property
    def vector_names(self) -> list[str]:
        return list(self.schema.get("vectorConfig", {}))

    def shard(self, tenant: str) -> dict[str, StoredObject]:
        if self.multi_tenant:
            if not tenant:
                raise RequestFailed(
                    f"class {self.name} has multi-tenancy enabled, but request was without tenant"
                )
            if tenant not in self.shards:
                raise RequestFailed(f'tenant not found: "{tenant}"', 404, grpc.StatusCode.NOT_FOUND)
            return self.shards[tenant]
        if tenant:
            raise RequestFailed(
                f"class {self.name} has multi-tenancy disabled, but request was with tenant"
            )
        return self.shards.setdefault("", {})


HNSW_DEFAULTS: dict[str, Any] = {
    "skip": False,
    "cleanupIntervalSeconds": 300,
    "maxConnections": 32,
    "efConstruction": 128,
    "ef": -1,
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "vectorCacheMaxObjects": 1_000_000_000_000,
    "flatSearchCutoff": 40_000,
    "distance": "cosine",
    "filterStrategy": "sweeping",
}


def normalised_class(body: Mapping[str, Any]) -> dict[str, Any]:
    """A class as the server stores and returns it: defaults filled in."""
    schema = deepcopy(dict(body))
    inverted = schema.setdefault("invertedIndexConfig", {})
    inverted.setdefault("bm25", {}).setdefault("b", 0.75)
    inverted["bm25"].setdefault("k1", 1.2)
    inverted.setdefault("cleanupIntervalSeconds", 60)
    stopwords = inverted.setdefault("stopwords", {})
    stopwords.setdefault("preset", "en")
    stopwords.setdefault("additions", None)
    stopwords.setdefault("removals", None)
    tenancy = schema.setdefault("multiTenancyConfig", {})
    tenancy.setdefault("enabled", False)
    tenancy.setdefault("autoTenantCreation", False)
    tenancy.setdefault("autoTenantActivation", False)
    schema.setdefault(
        "replicationConfig",
        {"factor": 1, "asyncEnabled": False, "deletionStrategy": "NoAutomatedResolution"},
    )
    if not tenancy["enabled"]:
        schema.setdefault(
            "shardingConfig",
            {
                "virtualPerPhysical": 128,
                "desiredCount": 1,
                "actualCount": 1,
                "desiredVirtualCount": 128,
                "actualVirtualCount": 128,
                "key": "_id",
                "strategy": "hash",
                "function": "murmur3",
            },
        )
    for config in schema.get("vectorConfig", {}).values():
        config.setdefault("vectorIndexType", "hnsw")
        config["vectorIndexConfig"] = {**HNSW_DEFAULTS, **config.get("vectorIndexConfig", {})}
    if "vectorConfig" not in schema:
        schema.setdefault("vectorizer", "none")
        schema.setdefault("vectorIndexType", "hnsw")
        schema["vectorIndexConfig"] = {**HNSW_DEFAULTS, **schema.get("vectorIndexConfig", {})}
    properties = []
    for prop in schema.get("properties", []):
        prop = {
            k: v
            for k, v in prop.items()
            if k not in ("skip_vectorization", "vectorize_property_name")
        }
        text = prop["dataType"][0] in ("text", "text[]")
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", text)
        prop.setdefault("indexRangeFilters", False)
        if text:
            prop.setdefault("tokenization", "word")
        properties.append(prop)
    schema["properties"] = properties
    return schema


class Database:
    """Classes, tenants and objects in memory."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.classes: dict[str, StoredClass] = {}

    def get(self, name: str) -> StoredClass:
        stored = self.classes.get(name)
        if stored is None:
            raise RequestFailed(
                f"could not find class {name} in schema", 404, grpc.StatusCode.NOT_FOUND
            )
        return stored

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body.get("class", ""))
        if not CLASS_NAME.match(name):
            raise RequestFailed(f"'{name}' is not a valid class name")
        for existing in self.classes:
            if existing.lower() == name.lower():
                suffix = "" if existing == name else f" as {existing!r}"
                raise RequestFailed(f"class name {name!r} already exists{suffix}")
        stored = StoredClass(normalised_class(body))
        self.classes[name] = stored
        return stored.schema


# --------------------------------------------------------------------------- filters


def filter_value(f: base_pb2.Filters) -> Any:
    kind = f.WhichOneof("test_value")
    if kind is None:
        return None
    value = getattr(f, kind)
    return list(value.values) if kind.endswith("_array") else value


COMPARISONS: dict[int, Callable[[Any, Any], bool]] = {
    Op.OPERATOR_LESS_THAN: lambda a, b: a < b,
    Op.OPERATOR_LESS_THAN_EQUAL: lambda a, b: a <= b,
    Op.OPERATOR_GREATER_THAN: lambda a, b: a > b,
    Op.OPERATOR_GREATER_THAN_EQUAL: lambda a, b: a >= b,
}


class Where:
    """A where-filter of a request, checked against the schema up front like the server does."""

    def __init__(
        self, stored: StoredClass, version: tuple[int, ...], f: base_pb2.Filters | None
    ) -> None:
        self.stored = stored
        self.version = version
        self.filter = f
        if f is not None:
            self._check(f)

    def __call__(self, obj: StoredObject) -> bool:
        return self.filter is None or self._matches(obj, self.filter)

    def _check(self, f: base_pb2.Filters) -> None:
        op = f.operator
        if op in (Op.OPERATOR_NOT, Op.OPERATOR_CONTAINS_NONE) and self.version < (1, 33, 0):
            raise RequestFailed(f"unknown filter operator {Op.Operator.Name(op)}")
        if op in (Op.OPERATOR_AND, Op.OPERATOR_OR, Op.OPERATOR_NOT):
            for sub in f.filters:
                self._check(sub)
            return
        supported = (
            Op.OPERATOR_EQUAL,
            Op.OPERATOR_NOT_EQUAL,
            Op.OPERATOR_CONTAINS_ANY,
            Op.OPERATOR_CONTAINS_ALL,
            Op.OPERATOR_CONTAINS_NONE,
            Op.OPERATOR_LIKE,
            Op.OPERATOR_IS_NULL,
            *COMPARISONS,
        )
        if op not in supported:
            raise RequestFailed(
                f"the stand-in does not implement filter operator {Op.Operator.Name(op)}",
                400,
                grpc.StatusCode.UNIMPLEMENTED,
            )
        prop = self._property(f)
        if prop == "_id":
            return
        spec = self.stored.properties.get(prop)
        if spec is None:
            raise RequestFailed(
                f"no such prop with name '{prop}' found in class '{self.stored.name}' in the "
                "schema. Check your schema files for which properties in this class are available"
            )
        if not spec.get("indexFilterable", True):
            raise RequestFailed(
                f"Filtering by property '{prop}' requires inverted index. Is `indexFilterable` "
                f"option of property '{prop}' enabled? Set it to `true` or leave empty"
            )

    @staticmethod
    def _property(f: base_pb2.Filters) -> str:
        if f.HasField("target"):
            return f.target.property
        return f.on[0] if f.on else ""

    def _matches(self, obj: StoredObject, f: base_pb2.Filters) -> bool:
        op = f.operator
        if op == Op.OPERATOR_AND:
            return all(self._matches(obj, sub) for sub in f.filters)
        if op == Op.OPERATOR_OR:
            return any(self._matches(obj, sub) for sub in f.filters)
        if op == Op.OPERATOR_NOT:
            return not self._matches(obj, f.filters[0])
        prop = self._property(f)
        if prop == "_id":
            values, tokenization = [obj.uuid], "field"
        else:
            tokenization = self.stored.properties[prop].get("tokenization", "field")
            values = self._values(obj.properties.get(prop), tokenization)
        wanted = filter_value(f)
        if op == Op.OPERATOR_IS_NULL:
            return (not values) == bool(wanted)
        if op == Op.OPERATOR_LIKE:
            return any(fnmatch.fnmatchcase(str(v), str(wanted)) for v in values)
        if op in COMPARISONS:
            return any(COMPARISONS[op](v, wanted) for v in values)
        present = set(values)
        wanted_tokens = self._values(wanted, tokenization)
        hits = [w in present for w in wanted_tokens]
        if op == Op.OPERATOR_EQUAL:
            return bool(hits) and all(hits)
        if op == Op.OPERATOR_NOT_EQUAL:
            return not (bool(hits) and all(hits))
        if op == Op.OPERATOR_CONTAINS_ANY:
            return any(hits)
        if op == Op.OPERATOR_CONTAINS_ALL:
            return all(hits)
        return not any(hits)  # CONTAINS_NONE

    @staticmethod
    def _values(value: Any, tokenization: str) -> list[Any]:
        """A property or filter value as the tokens the inverted index holds."""
        if value is None:
            return []
        out: list[Any] = []
        for item in value if isinstance(value, list) else [value]:
            out.extend(property_tokens(item, tokenization) if isinstance(item, str) else [item])
        return out


# --------------------------------------------------------------------------- search


def bm25(
    stored: StoredClass,
    shard: Mapping[str, StoredObject],
    candidates: Sequence[StoredObject],
    query: str,
    properties: Sequence[str],
) -> dict[str, float]:
    """BM25 (k1, b from the schema) of each candidate; only positive scores are returned."""
    config = stored.schema["invertedIndexConfig"]
    k1, b = float(config["bm25"]["k1"]), float(config["bm25"]["b"])
    stop = EN_STOPWORDS if config["stopwords"]["preset"] == "en" else frozenset()
    searchable = [
        p
        for p in (properties or list(stored.properties))
        if stored.properties.get(p, {}).get("indexSearchable")
    ]
    terms = sorted({t for t in tokens(query) if t not in stop})
    if not terms or not searchable:
        return {}

    def doc_terms(obj: StoredObject) -> list[str]:
        words: list[str] = []
        for prop in searchable:
            value = obj.properties.get(prop)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    words.extend(tokens(item))
        return words

    corpus = {uid: doc_terms(obj) for uid, obj in shard.items()}
    n_docs = len(corpus)
    avgdl = sum(len(words) for words in corpus.values()) / max(n_docs, 1)
    frequency = {t: sum(1 for words in corpus.values() if t in words) for t in terms}
    scores: dict[str, float] = {}
    for obj in candidates:
        words = corpus[obj.uuid]
        counts = Counter(words)
        score = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if not tf:
                continue
            n = frequency[term]
            idf = math.log(1.0 + (n_docs - n + 0.5) / (n + 0.5))
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(words) / max(avgdl, 1e-9)))
        if score > 0:
            scores[obj.uuid] = score
    return scores


def query_vector(message: Any) -> np.ndarray | None:
    """The query vector of a Hybrid or NearVector message, whichever field the client filled."""
    if message.vector_bytes:
        return unpack_floats(message.vector_bytes)
    for vec in message.vectors:
        return unpack_floats(vec.vector_bytes)
    fields = message.DESCRIPTOR.fields_by_name
    for target in message.vector_for_targets if "vector_for_targets" in fields else []:
        if target.vector_bytes:
            return unpack_floats(target.vector_bytes)
        for vec in target.vectors:
            return unpack_floats(vec.vector_bytes)
    if "near_vector" in fields and message.HasField("near_vector"):
        return query_vector(message.near_vector)
    if len(message.vector):
        return np.asarray(list(message.vector), dtype=np.float32)
    return None


def target_vector(stored: StoredClass, message: Any) -> str:
    """The named vector a Hybrid / NearVector message searches (the only one if unnamed)."""
    names: list[str] = list(message.targets.target_vectors) if message.HasField("targets") else []
    names = names or [str(n) for n in message.target_vectors]
    available = stored.vector_names
    if not names:
        if len(available) > 1:
            raise RequestFailed("multiple target vectors in collection; specify target vector")
        return available[0] if available else ""
    if names[0] not in available:
        raise RequestFailed(f"target vector {names[0]!r} does not exist in {stored.name}")
    return names[0]


def min_max(scores: Mapping[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    return {k: 1.0 if high == low else (v - low) / (high - low) for k, v in scores.items()}


# --------------------------------------------------------------------------- gRPC encoding


def encode_value(value: Any, data_type: str) -> properties_pb2.Value | None:
    if value is None:
        return None
    if data_type == "text[]":
        return properties_pb2.Value(
            list_value=properties_pb2.ListValue(
                text_values=properties_pb2.TextValues(values=[str(v) for v in value])
            )
        )
    if data_type == "int":
        return properties_pb2.Value(int_value=int(value))
    if data_type == "number":
        return properties_pb2.Value(number_value=float(value))
    if data_type == "boolean":
        return properties_pb2.Value(bool_value=bool(value))
    return properties_pb2.Value(text_value=str(value))


def decode_properties(message: batch_pb2.BatchObject.Properties) -> Props:
    props: Props = json_format.MessageToDict(message.non_ref_properties)
    for text in message.text_array_properties:
        props[text.prop_name] = list(text.values)
    for ints in message.int_array_properties:
        props[ints.prop_name] = list(ints.values)
    for numbers in message.number_array_properties:
        raw = numbers.values_bytes
        props[numbers.prop_name] = list(struct.unpack(f"<{len(raw) // 8}d", raw))
    for booleans in message.boolean_array_properties:
        props[booleans.prop_name] = list(booleans.values)
    for name in message.empty_list_props:
        props[name] = []
    return props


def checked_properties(stored: StoredClass, props: Props) -> Props:
    """Properties coerced to the schema's types, or :class:`RequestFailed` like the server."""
    out: Props = {}
    for name, value in props.items():
        spec = stored.properties.get(name)
        if spec is None:
            raise RequestFailed(
                f"no such prop with name '{name}' found in class '{stored.name}' in the schema. "
                "Check your schema files for which properties in this class are available"
            )
        data_type = spec["dataType"][0]
        if value is None:
            continue
        if data_type == "int":
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise RequestFailed(f"invalid integer property '{name}' on class '{stored.name}'")
            out[name] = int(value)
        elif data_type == "text":
            if not isinstance(value, str):
                raise RequestFailed(
                    f"invalid text property '{name}' on class '{stored.name}': not a string"
                )
            out[name] = value
        elif data_type == "text[]":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RequestFailed(
                    f"invalid text array property '{name}' on class '{stored.name}'"
                )
            out[name] = list(value)
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------- gRPC service


def _as_list(value: Any) -> list[Any]:
    """A property value as a list of its non-null values."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if v is not None]


def _filters(request: Any) -> base_pb2.Filters | None:
    return request.filters if request.HasField("filters") else None


class Servicer(weaviate_pb2_grpc.WeaviateServicer):
    """The data plane: Search, BatchObjects, BatchDelete, Aggregate."""

    def __init__(self, standin: WeaviateStandin):
        self.standin = standin
        self.db = standin.db

    # -- helpers

    def _guard(self, context: grpc.ServicerContext) -> None:
        key = self.standin.api_key
        if key is None:
            return
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {key}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthorized: invalid api key")

    @staticmethod
    def _fail(context: grpc.ServicerContext, error: RequestFailed) -> NoReturn:
        context.abort(error.code, error.message)
        raise AssertionError("unreachable")

    # -- Search

    def Search(
        self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_get_pb2.SearchReply:
        self._guard(context)
        started = time.perf_counter()
        try:
            with self.db.lock:
                results = self._search(request)
        except RequestFailed as error:
            self._fail(context, error)
        return search_get_pb2.SearchReply(took=time.perf_counter() - started, results=results)

    def _search(self, request: search_get_pb2.SearchRequest) -> list[search_get_pb2.SearchResult]:
        stored = self.db.get(request.collection)
        shard = stored.shard(request.tenant)
        where = Where(stored, self.standin.version_tuple, _filters(request))
        candidates = [obj for obj in shard.values() if where(obj)]
        limit = request.limit or 10
        ranked: list[tuple[StoredObject, dict[str, Any]]]
        if request.HasField("hybrid_search"):
            ranked = self._hybrid(stored, shard, candidates, request.hybrid_search)
        elif request.HasField("bm25_search"):
            search = request.bm25_search
            scores = bm25(stored, shard, candidates, search.query, list(search.properties))
            ranked = [
                (obj, {"score": scores[obj.uuid]})
                for obj in sorted(candidates, key=lambda o: (-scores.get(o.uuid, 0.0), o.uuid))
                if obj.uuid in scores
            ]
        elif request.HasField("near_vector"):
            ranked = self._near_vector(stored, candidates, request.near_vector)
        elif (
            any(
                request.HasField(name)
                for name in ("near_text", "near_object", "near_image", "group_by", "generative")
            )
            or request.sort_by
            or request.after
        ):
            raise RequestFailed(
                "the stand-in does not implement this search", 400, grpc.StatusCode.UNIMPLEMENTED
            )
        else:
            ranked = [(obj, {}) for obj in sorted(candidates, key=lambda o: o.uuid)]
        ranked = ranked[request.offset : request.offset + limit]
        return [self._result(stored, obj, extra, request) for obj, extra in ranked]

    @staticmethod
    def _distances(
        stored: StoredClass, candidates: Sequence[StoredObject], message: Any
    ) -> dict[str, float]:
        """Cosine distance of each candidate to the message's query vector (exact search)."""
        vector = query_vector(message)
        if vector is None:
            raise RequestFailed("no query vector given and the collection has no vectorizer")
        name = target_vector(stored, message)
        distances: dict[str, float] = {}
        for obj in candidates:
            stored_vector = obj.vectors.get(name)
            if stored_vector is None:
                continue
            if stored_vector.shape != vector.shape:
                raise RequestFailed(
                    f"vector search: vector lengths don't match: {len(vector)} vs "
                    f"{len(stored_vector)}"
                )
            distances[obj.uuid] = cosine_distance(vector, stored_vector)
        return distances

    def _near_vector(
        self, stored: StoredClass, candidates: Sequence[StoredObject], nv: Any
    ) -> list[tuple[StoredObject, dict[str, Any]]]:
        distances = self._distances(stored, candidates, nv)
        scored = []
        for obj in candidates:
            if obj.uuid not in distances:
                continue
            distance = distances[obj.uuid]
            certainty = 1.0 - distance / 2.0
            if nv.HasField("distance") and distance > nv.distance:
                continue
            if nv.HasField("certainty") and certainty < nv.certainty:
                continue
            scored.append((obj, {"distance": distance, "certainty": certainty}))
        return sorted(scored, key=lambda pair: (pair[1]["distance"], pair[0].uuid))

    def _hybrid(
        self,
        stored: StoredClass,
        shard: Mapping[str, StoredObject],
        candidates: Sequence[StoredObject],
        hybrid: Any,
    ) -> list[tuple[StoredObject, dict[str, Any]]]:
        """Relative score fusion: each list min-max normalised, then alpha-weighted."""
        if hybrid.fusion_type == hybrid.FUSION_TYPE_RANKED:
            raise RequestFailed(
                "the stand-in implements relativeScoreFusion only",
                400,
                grpc.StatusCode.UNIMPLEMENTED,
            )
        alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
        keyword: dict[str, float] = {}
        semantic: dict[str, float] = {}
        if alpha < 1:
            keyword = bm25(stored, shard, candidates, hybrid.query, list(hybrid.properties))
        if alpha > 0:
            distances = self._distances(stored, candidates, hybrid)
            semantic = {uid: 1.0 - distance for uid, distance in distances.items()}
        keyword_n, semantic_n = min_max(keyword), min_max(semantic)
        fused = {
            uid: alpha * semantic_n.get(uid, 0.0) + (1 - alpha) * keyword_n.get(uid, 0.0)
            for uid in {*keyword, *semantic}
        }
        order = sorted(fused, key=lambda uid: (-fused[uid], uid))
        return [
            (
                shard[uid],
                {
                    "score": fused[uid],
                    "explain": f"(hybrid) relativeScoreFusion: keyword {keyword.get(uid, 0):g}"
                    f", vector {semantic.get(uid, 0):g}",
                },
            )
            for uid in order
        ]

    def _result(
        self,
        stored: StoredClass,
        obj: StoredObject,
        extra: Mapping[str, Any],
        request: search_get_pb2.SearchRequest,
    ) -> search_get_pb2.SearchResult:
        wanted = request.properties
        names = (
            list(stored.properties)
            if not request.HasField("properties") or wanted.return_all_nonref_properties
            else list(wanted.non_ref_properties)
        )
        fields: dict[str, properties_pb2.Value] = {}
        for name in names:
            spec = stored.properties.get(name)
            if spec is None:
                raise RequestFailed(f"no such prop with name '{name}' found in class")
            value = encode_value(obj.properties.get(name), spec["dataType"][0])
            if value is not None:
                fields[name] = value
        asked = request.metadata
        metadata = search_get_pb2.MetadataResult(
            id=obj.uuid, id_as_bytes=uuid_lib.UUID(obj.uuid).bytes
        )
        if "score" in extra and asked.score:
            metadata.score, metadata.score_present = extra["score"], True
        if "explain" in extra and asked.explain_score:
            metadata.explain_score, metadata.explain_score_present = extra["explain"], True
        if "distance" in extra and asked.distance:
            metadata.distance, metadata.distance_present = extra["distance"], True
        if "certainty" in extra and asked.certainty:
            metadata.certainty, metadata.certainty_present = extra["certainty"], True
        if asked.vector or asked.vectors:
            for name, vector in obj.vectors.items():
                if asked.vector or name in asked.vectors:
                    metadata.vectors.append(
                        base_pb2.Vectors(
                            name=name,
                            vector_bytes=vector.astype("<f4").tobytes(),
                            type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32,
                        )
                    )
        return search_get_pb2.SearchResult(
            properties=search_get_pb2.PropertiesResult(
                non_ref_props=properties_pb2.Properties(fields=fields),
                target_collection=stored.name,
            ),
            metadata=metadata,
        )

    # -- BatchObjects

    def BatchObjects(
        self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext
    ) -> batch_pb2.BatchObjectsReply:
        self._guard(context)
        started = time.perf_counter()
        errors = []
        with self.db.lock:
            for index, message in enumerate(request.objects):
                try:
                    self._put(message)
                except RequestFailed as error:
                    errors.append(
                        batch_pb2.BatchObjectsReply.BatchError(index=index, error=error.message)
                    )
        return batch_pb2.BatchObjectsReply(took=time.perf_counter() - started, errors=errors)

    def _put(self, message: batch_pb2.BatchObject) -> None:
        stored = self.db.get(message.collection)
        shard = stored.shard(message.tenant)
        props = checked_properties(stored, decode_properties(message.properties))
        refusal = self.standin.refuse_when
        reason = refusal(stored.name, props) if refusal is not None else None
        if reason:
            raise RequestFailed(reason)
        vectors: dict[str, np.ndarray] = {}
        if message.vector_bytes or len(message.vector):
            if stored.vector_names:
                raise RequestFailed(
                    f"collection {stored.name} has named vectors; send the vector by name"
                )
            raw = message.vector_bytes
            vectors[""] = unpack_floats(raw) if raw else np.asarray(message.vector, np.float32)
        for vec in message.vectors:
            if vec.name not in stored.vector_names:
                raise RequestFailed(
                    f"collection {stored.name} does not have a vector named {vec.name!r}"
                )
            if vec.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
                raise RequestFailed("multi-vectors are not configured for this collection")
            vectors[vec.name] = unpack_floats(vec.vector_bytes)
        uid = str(uuid_lib.UUID(message.uuid))
        for name, vector in vectors.items():
            # Like HNSW: the first vector fixes the index's length (deleting objects keeps it).
            length = stored.lengths.setdefault((message.tenant, name), len(vector))
            if len(vector) != length:
                raise RequestFailed(
                    f"insert to vector index: new node has a vector with length {len(vector)}. "
                    f"Existing nodes have vectors with length {length}"
                )
        shard[uid] = StoredObject(uid, props, vectors)

    # -- BatchDelete

    def BatchDelete(
        self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext
    ) -> batch_delete_pb2.BatchDeleteReply:
        self._guard(context)
        started = time.perf_counter()
        try:
            with self.db.lock:
                stored = self.db.get(request.collection)
                shard = stored.shard(request.tenant)
                where = Where(stored, self.standin.version_tuple, request.filters)
                matched = sorted(uid for uid, obj in shard.items() if where(obj))
                matched = matched[: self.standin.query_maximum_results]
                if not request.dry_run:
                    for uid in matched:
                        del shard[uid]
        except RequestFailed as error:
            self._fail(context, error)
        return batch_delete_pb2.BatchDeleteReply(
            took=time.perf_counter() - started,
            failed=0,
            matches=len(matched),
            successful=0 if request.dry_run else len(matched),
            objects=[
                batch_delete_pb2.BatchDeleteObject(uuid=uuid_lib.UUID(uid).bytes, successful=True)
                for uid in matched
            ]
            if request.verbose
            else [],
        )

    # -- TenantsGet

    def TenantsGet(
        self, request: tenants_pb2.TenantsGetRequest, context: grpc.ServicerContext
    ) -> tenants_pb2.TenantsGetReply:
        self._guard(context)
        try:
            with self.db.lock:
                stored = self.db.get(request.collection)
                if not stored.multi_tenant:
                    raise RequestFailed(f"multi-tenancy is not enabled for class {stored.name!r}")
                names = sorted(stored.shards)
        except RequestFailed as error:
            self._fail(context, error)
        if request.HasField("names"):
            names = [n for n in names if n in set(request.names.values)]
        active = tenants_pb2.TENANT_ACTIVITY_STATUS_ACTIVE
        return tenants_pb2.TenantsGetReply(
            tenants=[tenants_pb2.Tenant(name=n, activity_status=active) for n in names]
        )

    # -- Aggregate

    def Aggregate(
        self, request: aggregate_pb2.AggregateRequest, context: grpc.ServicerContext
    ) -> aggregate_pb2.AggregateReply:
        self._guard(context)
        started = time.perf_counter()
        try:
            with self.db.lock:
                reply = self._aggregate(request)
        except RequestFailed as error:
            self._fail(context, error)
        reply.took = time.perf_counter() - started
        return reply

    def _aggregate(self, request: aggregate_pb2.AggregateRequest) -> aggregate_pb2.AggregateReply:
        if request.WhichOneof("search") is not None:
            raise RequestFailed(
                "the stand-in aggregates over all objects only", 400, grpc.StatusCode.UNIMPLEMENTED
            )
        stored = self.db.get(request.collection)
        shard = stored.shard(request.tenant)
        where = Where(stored, self.standin.version_tuple, _filters(request))
        objects = [obj for obj in shard.values() if where(obj)]
        if not request.HasField("group_by"):
            return aggregate_pb2.AggregateReply(
                single_result=aggregate_pb2.AggregateReply.Single(
                    objects_count=len(objects) if request.objects_count else None,
                    aggregations=self._metrics(stored, objects, request.aggregations),
                )
            )
        prop = request.group_by.property
        spec = stored.properties.get(prop)
        if spec is None:
            raise RequestFailed(f"no such prop with name '{prop}' found in class")
        groups: dict[Any, list[StoredObject]] = {}
        for obj in objects:
            value = obj.properties.get(prop)
            for key in value if isinstance(value, list) else [value]:
                if key is not None:
                    groups.setdefault(key, []).append(obj)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
        if request.HasField("limit"):
            ordered = ordered[: request.limit]
        Group = aggregate_pb2.AggregateReply.Group
        return aggregate_pb2.AggregateReply(
            grouped_results=aggregate_pb2.AggregateReply.Grouped(
                groups=[
                    Group(
                        objects_count=len(members),
                        aggregations=self._metrics(stored, members, request.aggregations),
                        grouped_by=Group.GroupedBy(path=[prop], text=str(key))
                        if isinstance(key, str)
                        else Group.GroupedBy(path=[prop], int=int(key)),
                    )
                    for key, members in ordered
                ]
            )
        )

    @staticmethod
    def _metrics(
        stored: StoredClass,
        objects: Sequence[StoredObject],
        wanted: Iterable[aggregate_pb2.AggregateRequest.Aggregation],
    ) -> aggregate_pb2.AggregateReply.Aggregations:
        Aggregation = aggregate_pb2.AggregateReply.Aggregations.Aggregation
        out = []
        for metric in wanted:
            prop = metric.property
            if prop not in stored.properties:
                raise RequestFailed(f"no such prop with name '{prop}' found in class")
            values = [v for obj in objects for v in _as_list(obj.properties.get(prop))]
            kind = metric.WhichOneof("aggregation")
            if kind == "text":
                limit = (
                    metric.text.top_occurences_limit
                    if metric.text.HasField("top_occurences_limit")
                    else 5
                )
                top = sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
                Text = Aggregation.Text
                out.append(
                    Aggregation(
                        property=prop,
                        text=Text(
                            count=len(values),
                            type="text",
                            top_occurences=Text.TopOccurrences(
                                items=[
                                    Text.TopOccurrences.TopOccurrence(value=str(v), occurs=n)
                                    for v, n in top
                                ]
                            )
                            if metric.text.top_occurences
                            else None,
                        ),
                    )
                )
            elif kind == "int":
                asked = metric.int
                ints = [int(v) for v in values]
                Integer = Aggregation.Integer
                result = Integer(count=len(ints), type="int")
                if ints:
                    if asked.minimum:
                        result.minimum = min(ints)
                    if asked.maximum:
                        result.maximum = max(ints)
                    if asked.sum:
                        result.sum = sum(ints)
                    if asked.mean:
                        result.mean = sum(ints) / len(ints)
                    if asked.mode:
                        result.mode = Counter(ints).most_common(1)[0][0]
                    if asked.median:
                        result.median = float(np.median(ints))
                out.append(Aggregation(property=prop, int=result))
            else:
                raise RequestFailed(
                    f"the stand-in does not aggregate {kind} metrics",
                    400,
                    grpc.StatusCode.UNIMPLEMENTED,
                )
        return aggregate_pb2.AggregateReply.Aggregations(aggregations=out)


def health_handler(standin: WeaviateStandin) -> grpc.GenericRpcHandler:
    """``grpc.health.v1.Health/Check``, which the client pings on connect."""

    def check(
        request: health_weaviate_pb2.WeaviateHealthCheckRequest, context: grpc.ServicerContext
    ) -> health_weaviate_pb2.WeaviateHealthCheckResponse:
        return health_weaviate_pb2.WeaviateHealthCheckResponse(
            status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
        )

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
            )
        },
    )


# --------------------------------------------------------------------------- REST


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def error_response(message: str, status: int) -> Response:
    return json_response({"error": [{"message": message}]}, status)


class RestApi:
    """The REST routes the client uses (schema, tenants, meta, readiness)."""

    SCHEMA = re.compile(r"^/v1/schema(?:/(?P<cls>[^/]+)(?:/tenants(?:/(?P<tenant>[^/]+))?)?)?$")

    def __init__(self, standin: WeaviateStandin):
        self.standin = standin
        self.db = standin.db

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except RequestFailed as error:
            response = error_response(error.message, error.status)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
            return Response(status=200)
        if path == "/v1/.well-known/openid-configuration":
            return Response(status=404)
        key = self.standin.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return error_response("anonymous access not enabled, please provide an api key", 401)
        if path == "/v1/meta" and method == "GET":
            return json_response(
                {
                    "hostname": "http://[::]:8080",
                    "version": self.standin.version,
                    "modules": {},
                    "grpcMaxMessageSize": 104_858_000,
                }
            )
        match = self.SCHEMA.match(path)
        if match is None:
            return error_response(f"the stand-in does not implement {method} {path}", 404)
        cls, tenant = match.group("cls"), match.group("tenant")
        with self.db.lock:
            if cls is None:
                return self.schema(request)
            if "/tenants" not in path:
                return self.one_class(request, cls)
            return self.tenants(request, self.db.get(cls), tenant)

    def schema(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response({"classes": [c.schema for c in self.db.classes.values()]})
        if request.method == "POST":
            return json_response(self.db.create(request.get_json()))
        return error_response("method not allowed", 405)

    def one_class(self, request: Request, cls: str) -> Response:
        if request.method == "GET":
            stored = self.db.classes.get(cls)
            return Response(status=404) if stored is None else json_response(stored.schema)
        if request.method == "DELETE":
            self.db.classes.pop(cls, None)
            return Response(status=200)
        return error_response("method not allowed", 405)

    def tenants(self, request: Request, stored: StoredClass, tenant: str | None) -> Response:
        if not stored.multi_tenant:
            raise RequestFailed(f"multi-tenancy is not enabled for class {stored.name!r}")
        listing = [{"name": t, "activityStatus": "ACTIVE"} for t in sorted(stored.shards)]
        if tenant is not None:
            if request.method not in ("GET", "HEAD"):
                return error_response("method not allowed", 405)
            if tenant not in stored.shards:
                return Response(status=404)
            return json_response({"name": tenant, "activityStatus": "ACTIVE"})
        if request.method == "GET":
            return json_response(listing)
        if request.method == "POST":
            for item in request.get_json():
                name = str(item["name"])
                if not TENANT_NAME.match(name):
                    raise RequestFailed(f"tenant name {name!r} is invalid")
                stored.shards.setdefault(name, {})
            return json_response(request.get_json())
        if request.method == "DELETE":
            for name in request.get_json():
                stored.shards.pop(str(name), None)
                stored.lengths = {k: v for k, v in stored.lengths.items() if k[0] != name}
            return Response(status=200)
        return error_response("method not allowed", 405)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Do not log every request to stderr."""


# --------------------------------------------------------------------------- the server


class WeaviateStandin:
    """The TEST DOUBLE: an HTTP + gRPC Weaviate look-alike on free local ports.

    Use as a context manager (or ``start()``/``stop()``); ``url`` and ``grpc_port`` are what
    a :class:`~agents.retriever.store.weaviate.WeaviateStore` connects to.
    """

    def __init__(
        self,
        *,
        version: str = "1.36.9",
        api_key: str | None = None,
        query_maximum_results: int = 10_000,
        refuse_when: Refusal | None = None,
    ) -> None:
        self.version = version
        self.version_tuple = tuple(int(p) for p in version.split("-")[0].split("."))[:3]
        self.api_key = api_key
        self.query_maximum_results = query_maximum_results
        self.refuse_when = refuse_when
        self.db = Database()
        self._http: BaseWSGIServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self.grpc_port = 0

    @property
    def url(self) -> str:
        assert self._http is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._http.port}"

    def start(self) -> WeaviateStandin:
        self._http = make_server(
            "127.0.0.1", 0, RestApi(self), threaded=True, request_handler=_QuietHandler
        )
        self._http_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="weaviate-standin-http",
            daemon=True,
        )
        self._http_thread.start()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(Servicer(self), self._grpc)
        self._grpc.add_generic_rpc_handlers((health_handler(self),))
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None

    def __enter__(self) -> WeaviateStandin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection for tests

    def class_names(self) -> list[str]:
        with self.db.lock:
            return sorted(self.db.classes)

    def objects(self, cls: str, tenant: str = "") -> list[StoredObject]:
        with self.db.lock:
            return list(self.db.get(cls).shards.get(tenant, {}).values())


@contextlib.contextmanager
def running(**options: Any) -> Iterator[WeaviateStandin]:
    """A started stand-in, stopped on exit."""
    with WeaviateStandin(**options) as standin:
        yield standin
