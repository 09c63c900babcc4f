"""Embeddings by text for grounding: an in-process LRU, optionally backed by a shared store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from agents.common.embedding import Embedder, Vectors


class VectorStore(Protocol):
    """A second level behind the in-process cache (:class:`agents.common.vectors.SharedVectors`)."""

    def get_many(self, texts: Sequence[str]) -> dict[str, Vectors]: ...

    def put_many(self, vectors: Mapping[str, Vectors]) -> None: ...


class VectorCache:
    """Embeddings by text; one embedder call per lookup for every text not cached yet.

    With ``shared`` set, texts missing here are looked up there before being embedded, and
    what this process embeds is stored there for others.
    """

    def __init__(self, embedder: Embedder, size: int | None = 8192) -> None:
        self.embedder = embedder
        self.size = size
        self.shared: VectorStore | None = None
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, texts: Iterable[str]) -> dict[str, Vectors]:
        """Vectors of ``texts`` (embedding the new ones in one batch)."""
        wanted = list(dict.fromkeys(texts))
        with self._lock:
            found: dict[str, Vectors] = {}
            missing: list[str] = []
            for text in wanted:
                vector = self._vectors.get(text)
                if vector is None:
                    missing.append(text)
                else:
                    self._vectors.move_to_end(text)
                    found[text] = vector
            if missing and self.shared is not None:
                for text, row in self.shared.get_many(missing).items():
                    found[text] = row
                    self._vectors[text] = row
                missing = [t for t in missing if t not in found]
            if missing:
                computed = self.embedder.embed_documents(missing)
                fresh = dict(zip(missing, computed, strict=True))
                for text, row in fresh.items():
                    found[text] = row
                    self._vectors[text] = row
                if self.shared is not None:
                    self.shared.put_many(fresh)
                if self.size is not None:
                    while len(self._vectors) > max(self.size, len(wanted)):
                        self._vectors.popitem(last=False)
            return found

    def query(self, text: str) -> Vectors:
        """The embedding of a search query (not cached: questions rarely repeat)."""
        with self._lock:
            return self.embedder.embed_query(text)
