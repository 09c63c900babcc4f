"""The server backend: Weaviate (the production store; see docs/weaviate.md).

- :mod:`.schema`: how a collection looks in Weaviate (class names, properties, filters);
- :mod:`.errors`: client failures as the store's errors, saying what to do next;
- :mod:`.connection`: opening a client, REST and gRPC checked;
- :mod:`.store`: :class:`WeaviateStore`, the :class:`~agents.retriever.store.base.DocumentStore`.
"""

from agents.retriever.store.weaviate.schema import (
    PROPERTIES,
    VECTOR,
    class_description,
    class_name,
    collection_name,
    where_filter,
)
from agents.retriever.store.weaviate.store import WeaviateStore

__all__ = [
    "PROPERTIES",
    "VECTOR",
    "WeaviateStore",
    "class_description",
    "class_name",
    "collection_name",
    "where_filter",
]
