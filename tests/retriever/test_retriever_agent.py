"""The retriever agent over the real A2A wire: ingest with progress, search, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.helpers import get_data_parts
from a2a.types import CancelTaskRequest, StreamResponse, Task, TaskState
from prometheus_client import generate_latest

from agents.retriever.agent import parts
from agents.retriever.chunking import chunk_text
from agents.retriever.settings import RetrieverSettings
from agents.retriever.store.base import Chunk, UpsertReport
from agents.retriever.store.lancedb import LanceStore
from protocol.client import SkillFailed, call_skill, open_client, skill_message, task_data
from protocol.payloads import IngestReport, IngestRequest, SearchRequest, SearchResult
from scriptorium.testing import metric_value, running_agent, wait_for


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_prefix: str) -> RetrieverSettings:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bees.md").write_text("# Bees\nThe queen bee lays the eggs of the colony.")
    (inbox / "valkey.md").write_text("# Valkey\nValkey is a fork of the Redis key value store.")
    return RetrieverSettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        ingest_roots=[inbox],
        heartbeat_interval_s=0.5,
    )


@pytest.fixture
async def client(settings: RetrieverSettings, a2a_http: httpx.AsyncClient) -> AsyncIterator[Client]:
    async with running_agent(parts(settings), settings) as url:
        yield await open_client(url, a2a_http)


async def test_ingest_streams_progress_then_search_finds_passages(
    client: Client, settings: RetrieverSettings
) -> None:
    updates: list[str] = []

    async def on_update(event: object, task: object) -> None:
        status = getattr(event, "status_update", None)
        if status is not None and status.status.message.parts:
            updates.append(status.status.message.parts[0].text)

    inbox = settings.ingest_roots[0]
    request = IngestRequest(
        paths=[str(inbox)],
        documents=[{"text": "LanceDB keeps vectors on local disk.", "source": "inline:lance"}],
    )
    task = await call_skill(client, "ingest", request, on_update=on_update)
    report = IngestReport.model_validate(task_data(task)[0])
    assert (report.ingested, report.chunks, report.skipped) == (3, 3, [])
    assert any("chunks" in text for text in updates)
    assert updates[-1].startswith("2/2 files, 3 documents"), updates  # inline ones are no files

    search = SearchRequest(query="who lays the eggs?", k=2)
    result = SearchResult.model_validate(task_data(await call_skill(client, "search", search))[0])
    assert result.passages[0].document_id == "bees.md"
    assert result.passages[0].metadata["heading"] == "Bees"

    again = IngestReport.model_validate(task_data(await call_skill(client, "ingest", request))[0])
    assert (again.ingested, again.unchanged, again.chunks) == (0, 3, 0)


@pytest.mark.parametrize(
    ("skill", "payload", "says"),
    [
        ("search", {"query": "   "}, "empty query"),
        ("search", {"query": "x", "filters": {"colour": "red"}}, "cannot filter on colour"),
        ("ingest", {"paths": ["/etc"]}, "outside the ingest roots"),
        ("ingest", {}, "nothing to ingest"),
    ],
)
async def test_bad_requests_are_rejected_with_a_reason(
    client: Client, skill: str, payload: dict[str, object], says: str
) -> None:
    if skill == "search" and "filters" in payload:
        await call_skill(client, "ingest", {"documents": [{"text": "a", "source": "s"}]})
    with pytest.raises(SkillFailed) as caught:
        await call_skill(client, skill, payload)
    assert caught.value.task.status.state == TaskState.TASK_STATE_REJECTED
    assert says in str(caught.value)


async def test_an_empty_store_finds_nothing_and_says_so(client: Client) -> None:
    result, notes = await _search(client, {"query": "anything"})
    assert result == [{"query": "anything", "passages": []}]
    assert notes == [{"empty": True, "collection": "default"}]


async def test_an_unknown_collection_is_rejected_naming_the_known_ones(
    client: Client, settings: RetrieverSettings
) -> None:
    await LanceStore(settings.resolved_lancedb_dir, dim=384).ensure_collection("hollow")
    await call_skill(client, "ingest", {"documents": [{"text": "a", "source": "s"}]})
    with pytest.raises(SkillFailed) as caught:
        await call_skill(client, "search", {"query": "x", "collection": "nope"})
    assert caught.value.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "collection 'nope' does not exist (known collections: default, hollow)" in str(
        caught.value
    )
    result, notes = await _search(client, {"query": "anything", "collection": "hollow"})
    assert result == [{"query": "anything", "passages": []}]
    assert notes == [{"empty": True, "collection": "hollow"}]
    result, notes = await _search(client, {"query": "a"})
    assert len(result[0]["passages"]) == 1
    assert notes == []


async def _search(client: Client, payload: dict[str, object]) -> tuple[list[Any], list[Any]]:
    """A search's data artifacts, and the data of the status updates streamed on the way."""
    notes: list[Any] = []

    async def on_update(event: StreamResponse, task: Task) -> None:
        if event.HasField("status_update"):
            notes.extend(get_data_parts(list(event.status_update.status.message.parts)))

    task = await call_skill(client, "search", payload, on_update=on_update)
    return task_data(task), notes


async def test_ingest_can_be_canceled(
    client: Client, settings: RetrieverSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel stops the handler at a point the test controls: the first batch is written,
    the second is held at the store's door; after the cancel the handler has ended, the held
    write was cancelled and never reached the store, and nothing else was written."""
    documents = [
        {"text": " ".join(f"Sentence {j} of document {i}." for j in range(300)), "source": f"d{i}"}
        for i in range(60)
    ]
    per_document = len(chunk_text(documents[0]["text"]))
    replace = LanceStore.replace_documents
    writes: list[str] = []
    held = asyncio.Event()

    async def first_write_only(
        store: LanceStore, collection: str, chunks: Mapping[str, Sequence[Chunk]]
    ) -> UpsertReport:
        if not writes:
            writes.append("written")
            return await replace(store, collection, chunks)
        writes.append("held")
        held.set()
        try:
            await asyncio.Event().wait()  # never set: only a cancel ends this write
        except asyncio.CancelledError:
            writes[-1] = "canceled"
            raise
        raise AssertionError("unreachable")

    monkeypatch.setattr(LanceStore, "replace_documents", first_write_only)
    before = canceled_ingests()
    task_id = ""
    async for event in client.send_message(skill_message("ingest", {"documents": documents})):
        if event.HasField("task"):
            task_id = event.task.id
            break
    assert task_id
    await asyncio.wait_for(held.wait(), 120)
    store = LanceStore(settings.resolved_lancedb_dir, dim=384)
    stored = await store.count("default")
    assert 0 < stored < len(documents) * per_document

    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    await wait_for(lambda: canceled_ingests() > before, 30, "the ingest handler ended canceled")
    assert writes == ["written", "canceled"], "a write started after the cancel"
    assert await store.count("default") == stored, "ingestion went on after the cancel"
    hashes = await store.document_hashes("default", [d["source"] for d in documents])
    assert len(hashes) * per_document == stored
    for doc_id in hashes:  # whatever was written is whole
        assert await store.count("default", document_id=doc_id) == per_document


def canceled_ingests() -> float:
    """Ingest tasks whose handler has ended canceled (counted as the executor unwinds it)."""
    exposition = generate_latest().decode()
    return metric_value(
        exposition, "scriptorium_agent_tasks_total", skill="ingest", outcome="canceled"
    )
