"""How our collections look in Weaviate: class names, the class definition, filters, objects.

Each of our collections is one Weaviate class holding its chunks as objects with our own
properties and our own vectors (the named vector ``default``, HNSW, cosine distance; no
vectorizer module). ``text`` is word-tokenized for BM25; the filterable fields are
field-tokenized. An object's UUID is ``generate_uuid5(chunk.id)``, so writing a chunk again
overwrites it.

Names. Weaviate class names start with a capital letter and are unique *ignoring case*, so a
collection maps to ``<Namespace>_<name>`` (or, without a namespace, to its name with the first
letter capitalised). The class description records our exact name, which is how the store
maps classes back and how a collision (``docs`` after ``Docs``) is refused instead of
silently shared. Classes without that description were not made by Scriptorium and are
neither listed nor touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from protocol.extras import extra

with extra("retrieval", feature="the Weaviate store"):
    from weaviate.classes.config import DataType, Property, Tokenization
    from weaviate.classes.query import Filter, FilterReturn
    from weaviate.collections.classes.aggregate import AggregateInteger, AggregateText

from agents.retriever.store.base import (
    HIT_FIELDS,
    Chunk,
    FilterValue,
    check_collection,
    stored_fields,
)

#: The named vector that holds our embeddings.
VECTOR = "default"
NAMESPACE = re.compile(r"^[A-Z][A-Za-z0-9]{0,30}$")
TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DESCRIPTION = re.compile(r"^Scriptorium collection '([A-Za-z][A-Za-z0-9_]{0,62})'")
#: Properties a hit is built from.
RETURNED = ["chunk_id", *HIT_FIELDS]


def _text(
    name: str,
    *,
    filterable: bool = True,
    searchable: bool = False,
    data_type: DataType = DataType.TEXT,
) -> Property:
    """A text property: BM25-searchable ones word-tokenized, the others whole-field."""
    return Property(
        name=name,
        data_type=data_type,
        tokenization=Tokenization.WORD if searchable else Tokenization.FIELD,
        index_filterable=filterable,
        index_searchable=searchable,
    )


def _int(name: str, *, filterable: bool = False) -> Property:
    return Property(
        name=name, data_type=DataType.INT, index_filterable=filterable, index_range_filters=False
    )


PROPERTIES = [
    _text("chunk_id"),
    _text("document_id"),
    _text("text", filterable=False, searchable=True),
    _text("source"),
    _int("start"),
    _int("end"),
    _text("title"),
    _text("heading"),
    _text("kind"),
    _text("tags", data_type=DataType.TEXT_ARRAY),
    _text("doc_hash"),
    _int("doc_chunks", filterable=True),
    _text("metadata", filterable=False),
]


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


def where_filter(filters: Mapping[str, FilterValue]) -> FilterReturn | None:
    """Our (checked) filters as a Weaviate filter: equality, a list is any of, tags has."""
    if not filters:
        return None
    parts: list[FilterReturn] = []
    for name, value in sorted(filters.items()):
        values = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        prop = Filter.by_property(name)
        if name == "tags" or len(values) > 1:
            parts.append(prop.contains_any(values))
        else:
            parts.append(prop.equal(values[0]))
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


def document_filter(document_id: str) -> FilterReturn:
    """Every chunk of one document."""
    return Filter.by_property("document_id").equal(document_id)


def properties(chunk: Chunk, doc_chunks: int) -> dict[str, Any]:
    """A chunk as a Weaviate object's properties (``doc_chunks``: 0 when written by upsert)."""
    return {"chunk_id": chunk.id, **stored_fields(chunk), "doc_chunks": doc_chunks}


def whole_document_hash(metrics: Mapping[str, Any], total: int | None) -> str | None:
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
