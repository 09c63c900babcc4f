"""Store backends for the contract suite: LanceDB always, Weaviate when it can be reached.

``weaviate-standin`` / ``weaviate-standin-mt`` run the Weaviate backend against the labelled
test double in :mod:`tests.retriever.weaviate_standin` (no Weaviate server can run here);
``weaviate-live`` runs it against a real server when ``WEAVIATE_URL`` is set (optionally
``WEAVIATE_GRPC_PORT``, ``WEAVIATE_API_KEY``). Each Weaviate test gets its own class-name
namespace and drops what it made.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.retriever.store.base import DocumentStore, StoreError
from agents.retriever.store.lancedb import LanceStore
from agents.retriever.store.weaviate import WeaviateStore
from tests.retriever.weaviate_standin import WeaviateStandin

DIM = 8
BACKENDS = [
    "lancedb",
    "weaviate-standin",
    "weaviate-standin-mt",
    pytest.param("weaviate-live", marks=pytest.mark.live),
]


def fresh_namespace() -> str:
    """A fresh class-name namespace, so tests sharing a server do not see each other."""
    return f"T{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def weaviate_standin() -> Iterator[WeaviateStandin]:
    """The Weaviate TEST DOUBLE (HTTP + gRPC on local ports), shared by the session."""
    with WeaviateStandin() as standin:
        yield standin


def _weaviate(request: pytest.FixtureRequest) -> WeaviateStore:
    if request.param == "weaviate-live":
        url = os.environ.get("WEAVIATE_URL")
        if not url:
            pytest.skip(
                "WEAVIATE_URL is not set: the live Weaviate run needs a server, e.g. "
                "docker run -p 8080:8080 -p 50051:50051 cr.weaviate.io/semitechnologies/weaviate"
            )
        return WeaviateStore(
            url,
            dim=DIM,
            grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
            api_key=os.environ.get("WEAVIATE_API_KEY") or None,
            namespace=fresh_namespace(),
        )
    standin: WeaviateStandin = request.getfixturevalue("weaviate_standin")
    return WeaviateStore(
        standin.url,
        dim=DIM,
        grpc_port=standin.grpc_port,
        namespace=fresh_namespace(),
        tenant="tenant1" if request.param == "weaviate-standin-mt" else None,
        timeout_s=10.0,
        connect_timeout_s=5.0,
    )


def twin(store: DocumentStore) -> DocumentStore:
    """A second store on the same data (another process, as far as the store can tell)."""
    if isinstance(store, LanceStore):
        return LanceStore(store.path, dim=store.dim, ann_min_rows=store.ann_min_rows)
    if isinstance(store, WeaviateStore):
        return WeaviateStore(
            store.url,
            dim=store.dim,
            grpc_port=store.grpc_port,
            api_key=store.api_key,
            namespace=store.namespace,
            tenant=store.tenant,
            timeout_s=store.timeout_s,
            connect_timeout_s=store.connect_timeout_s,
        )
    raise AssertionError(f"no twin for {type(store).__name__}")  # pragma: no cover


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocumentStore]:
    """A fresh, empty store of each backend (8-d vectors)."""
    backend: DocumentStore
    if request.param == "lancedb":
        backend = LanceStore(tmp_path / "lancedb", dim=DIM, ann_min_rows=50)
    elif str(request.param).startswith("weaviate"):
        backend = _weaviate(request)
    else:  # pragma: no cover - a backend without a branch here
        raise AssertionError(request.param)
    try:
        yield backend
    finally:
        if isinstance(backend, WeaviateStore):
            with contextlib.suppress(StoreError):
                for name in await backend.collections():
                    await backend.drop_collection(name)
        await backend.close()
