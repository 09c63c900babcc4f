"""Weaviate-specific behaviour of WeaviateStore, through the labelled stand-in (HTTP + gRPC).

The stand-in (tests/retriever/weaviate_standin.py) is a TEST DOUBLE: the real client talks to
it over the real wire protocols. Each test here starts its own, so server state and options
(version, API key, limits, refusals) are the test's own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from agents.retriever.store.base import Chunk, StoreError, StoreUnavailable
from agents.retriever.store.weaviate import (
    WeaviateStore,
    class_description,
    class_name,
    collection_name,
)
from tests.retriever.conftest import DIM
from tests.retriever.weaviate_standin import WeaviateStandin, running

pytestmark = pytest.mark.timeout(60)


def vec(i: int, dim: int = DIM) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[i % dim] = 1.0
    return vector


def chunk(doc: str, i: int, *, doc_hash: str = "h1", dim: int = DIM) -> Chunk:
    return Chunk(
        id=f"{doc}#{i}",
        document_id=doc,
        text=f"{doc} part {i} about bees and hives",
        vector=vec(i, dim),
        source=f"{doc}.md",
        doc_hash=doc_hash,
    )


@pytest.fixture
def standin() -> Iterator[WeaviateStandin]:
    with running() as server:
        yield server


def make_store(server: WeaviateStandin, **options: Any) -> WeaviateStore:
    options.setdefault("dim", DIM)
    options.setdefault("timeout_s", 10.0)
    options.setdefault("connect_timeout_s", 5.0)
    return WeaviateStore(server.url, grpc_port=server.grpc_port, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- per-object errors


async def test_objects_the_server_refuses_are_reported_not_raised(standin: WeaviateStandin) -> None:
    first = make_store(standin)
    assert (await first.upsert("Docs", [chunk("a", 0)])).written == 1
    # Another deployment with a different embedding model writes into the same collection:
    # the server refuses each object (its HNSW index holds 8-d vectors).
    other = make_store(standin, dim=4)
    try:
        report = await other.upsert("Docs", [chunk("b", 0, dim=4), chunk("b", 1, dim=4)])
        assert report.written == 0
        assert set(report.errors) == {"b#0", "b#1"}
        assert all("length 4" in e and "length 8" in e for e in report.errors.values())
        replaced = await other.replace_documents(
            "Docs", {"a": [chunk("a", 0, doc_hash="h2", dim=4)]}
        )
        assert set(replaced.errors) == {"a#0"}
        # The refused replacement deleted nothing: the old version is intact.
        assert await first.document_hashes("Docs", ["a"]) == {"a": "h1"}
    finally:
        await first.close()
        await other.close()


async def test_partly_refused_documents_read_as_not_stored() -> None:
    def refuse(cls: str, props: dict[str, Any]) -> str | None:
        return "simulated refusal" if props["chunk_id"] in {"a#1", "b#2"} else None

    with running(refuse_when=refuse) as server:
        store = make_store(server)
        try:
            # b is stored whole first (nothing of b is refused yet: it has 2 chunks).
            await store.replace_documents("Docs", {"b": [chunk("b", 0), chunk("b", 1)]})
            report = await store.replace_documents(
                "Docs",
                {
                    "a": [chunk("a", 0), chunk("a", 1)],  # new, a#1 refused
                    "b": [chunk("b", i, doc_hash="h2") for i in range(3)],  # b#2 refused
                    "c": [chunk("c", 0)],
                },
            )
            assert report.written == 4
            assert set(report.errors) == {"a#1", "b#2"}
            assert "simulated refusal" in report.errors["a#1"]
            # a is missing a chunk and b mixes two versions: both must be ingested again.
            assert await store.document_hashes("Docs", ["a", "b", "c"]) == {"c": "h1"}
            assert await store.count("Docs", document_id="b") == 2
        finally:
            await store.close()


# --------------------------------------------------------------------------- multi-tenancy


async def test_multi_tenancy_isolates_tenants(standin: WeaviateStandin) -> None:
    alice = make_store(standin, tenant="alice")
    bob = make_store(standin, tenant="bob")
    carol = make_store(standin, tenant="carol")
    plain = make_store(standin)
    try:
        await alice.replace_documents("Docs", {"a": [chunk("a", 0), chunk("a", 1)]})
        await bob.replace_documents("Docs", {"b": [chunk("b", 0)]})
        assert standin.class_names() == ["Docs"]  # one class, two tenants
        assert (await alice.count("Docs"), await bob.count("Docs")) == (2, 1)
        hits = await bob.query("Docs", text="bees", vector=vec(0), k=10, alpha=0.5)
        assert {h.document_id for h in hits} == {"b"}
        assert await bob.document_hashes("Docs", ["a", "b"]) == {"b": "h1"}
        assert await carol.collections() == []
        assert await carol.document_hashes("Docs", ["a"]) == {}
        with pytest.raises(StoreError, match="no data for tenant 'carol'"):
            await carol.count("Docs")
        with pytest.raises(StoreError, match="multi-tenancy on but this store has it off"):
            await plain.count("Docs")
        await alice.drop_collection("Docs")
        assert await alice.collections() == []
        assert await bob.count("Docs") == 1  # bob's tenant (and the class) survive
        await bob.drop_collection("Docs")
        assert standin.class_names() == []  # the last tenant took the class with it
    finally:
        for store in (alice, bob, carol, plain):
            await store.close()


def test_tenancy_options_are_checked() -> None:
    with pytest.raises(StoreError, match="needs a tenant"):
        WeaviateStore("http://localhost:8080", dim=DIM, multi_tenancy=True)
    with pytest.raises(StoreError, match="invalid Weaviate tenant"):
        WeaviateStore("http://localhost:8080", dim=DIM, tenant="no spaces")
    with pytest.raises(StoreError, match="not an http"):
        WeaviateStore("localhost:8080", dim=DIM)


# --------------------------------------------------------------------------- names


def test_collection_names_map_to_class_names_and_back() -> None:
    for name, expected in [("docs", "Docs"), ("Docs", "Docs"), ("my_docs2", "My_docs2")]:
        weaviate_class = class_name(name)
        assert weaviate_class == expected
        assert weaviate_class[0].isupper()
        assert collection_name(weaviate_class, class_description(name)) == name
    assert class_name("docs", "Prod") == "Prod_docs"
    assert collection_name("Prod_docs", class_description("docs"), "Prod") == "docs"
    assert collection_name("Prod_docs", class_description("docs")) is None  # other namespace
    assert collection_name("Docs", "some other application's class") is None
    with pytest.raises(StoreError, match="invalid collection name"):
        class_name("no spaces")


async def test_collections_round_trip_through_the_server(standin: WeaviateStandin) -> None:
    store = make_store(standin)
    prod = make_store(standin, namespace="Prod")
    try:
        await store.ensure_collection("docs")
        await prod.ensure_collection("docs")
        assert standin.class_names() == ["Docs", "Prod_docs"]
        assert await store.collections() == ["docs"]
        assert await prod.collections() == ["docs"]
        # Weaviate class names ignore case: "Docs" would share class "Docs" with "docs".
        with pytest.raises(StoreError, match="class names ignore case"):
            await store.ensure_collection("Docs")
        # A class made by something else is neither listed nor touched.
        httpx.post(f"{standin.url}/v1/schema", json={"class": "Foreign"}).raise_for_status()
        assert await store.collections() == ["docs"]
        with pytest.raises(StoreError, match="not that collection"):
            await store.ensure_collection("foreign")
        with pytest.raises(StoreError, match="not made by Scriptorium"):
            await store.drop_collection("foreign")
        await store.drop_collection("docs")
        assert standin.class_names() == ["Foreign", "Prod_docs"]
    finally:
        await store.close()
        await prod.close()


# --------------------------------------------------------------------------- connectivity


async def test_unreachable_server_fails_fast_with_what_to_do() -> None:
    store = WeaviateStore(f"http://127.0.0.1:{free_port()}", dim=DIM, connect_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="check WEAVIATE_URL") as caught:
        await store.count("Docs")
    assert time.monotonic() - started < 3.0
    assert "server is up" in str(caught.value)


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        port = silent.getsockname()[1]
        store = WeaviateStore(f"http://127.0.0.1:{port}", dim=DIM, connect_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.collections()
        assert time.monotonic() - started < 2.5


async def test_wrong_grpc_port_is_reported(standin: WeaviateStandin) -> None:
    store = WeaviateStore(standin.url, dim=DIM, grpc_port=free_port(), connect_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="GRPC_PORT"):
        await store.ensure_collection("Docs")
    assert time.monotonic() - started < 3.0


async def test_api_key_is_sent_and_a_wrong_one_is_explained() -> None:
    with running(api_key="s3cret") as server:
        good = make_store(server, api_key="s3cret")
        bad = make_store(server, api_key="wrong")
        try:
            assert (await good.upsert("Docs", [chunk("a", 0)])).written == 1
            assert await good.count("Docs") == 1
            with pytest.raises(StoreError, match="WEAVIATE_API_KEY"):
                await bad.collections()
        finally:
            await good.close()
            await bad.close()


# ------------------------------------------------------------------- server versions, limits


async def test_a_too_old_server_is_named() -> None:
    with running(version="1.26.3") as server:
        store = make_store(server)
        with pytest.raises(StoreError, match="Upgrade the Weaviate server") as caught:
            await store.collections()
        assert not isinstance(caught.value, StoreUnavailable)


async def test_replace_works_on_servers_without_contains_none() -> None:
    with running(version="1.32.0") as server:  # no Not / ContainsNone filters before 1.33
        store = make_store(server)
        try:
            await store.replace_documents("Docs", {"a": [chunk("a", i) for i in range(4)]})
            await store.replace_documents(
                "Docs", {"a": [chunk("a", i, doc_hash="h2") for i in (1, 5)]}
            )
            assert await store.count("Docs", document_id="a") == 2
            assert await store.document_hashes("Docs", ["a"]) == {"a": "h2"}
        finally:
            await store.close()


async def test_deletes_past_the_servers_batch_delete_limit() -> None:
    with running(query_maximum_results=3) as server:
        store = make_store(server, delete_limit=3)
        try:
            await store.replace_documents("Docs", {"a": [chunk("a", i) for i in range(8)]})
            await store.replace_documents("Docs", {"a": [chunk("a", 0, doc_hash="h2")]})
            assert await store.count("Docs", document_id="a") == 1
            await store.upsert("Docs", [chunk("b", i) for i in range(7)])
            assert await store.delete_document("Docs", "b") == 7
            assert await store.count("Docs") == 1
        finally:
            await store.close()
