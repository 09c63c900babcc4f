"""``scriptorium demo``: a stack on embedded defaults ingests a demo corpus and answers two
questions over A2A."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from scriptorium.agents_view import agents_table
from scriptorium.launcher import STACK_START_TIMEOUT_S, Stack
from scriptorium.terminal import console, out

if TYPE_CHECKING:
    from protocol.payloads import Document, IngestReport
    from protocol.settings import CommonSettings

#: This project's own files the demo ingests beside the packaged corpus (when present).
DEMO_DOCS = ("README.md", "docs")


def run_demo(stack: Stack) -> None:
    """Start ``stack`` (its caller stops it), show its agents, ingest, ask.

    Raises :class:`~scriptorium.launcher.StackError` when a component fails to start.
    """
    with console.status(
        "starting Valkey, the registry and five agents (vLLM loads in 30-60 s) ..."
    ):
        stack.start()
        records = stack.wait_healthy(timeout_s=STACK_START_TIMEOUT_S)
    out.print(agents_table(records))
    out.print(f"discovery endpoint: {stack.registry_url}/agents")
    out.print(stack.auth_summary())
    asyncio.run(ingest_and_ask(stack.registry_url, stack.settings, demo_documents()))


def demo_documents() -> list[Document]:
    """The packaged demo corpus and this project's docs, read here and sent inline."""
    from agents.retriever.library import document_payload
    from agents.retriever.readers import SourceDocument, read_paths
    from scriptorium.corpora import demo_documents as packaged

    paths = [Path(p) for p in DEMO_DOCS if Path(p).exists()]
    read = [item for item in read_paths(paths, root=Path.cwd()) if isinstance(item, SourceDocument)]
    return [document_payload(doc) for doc in [*packaged(), *read]]


async def ingest_and_ask(
    registry_url: str, settings: CommonSettings, documents: list[Document]
) -> None:
    """Ingest ``documents`` over A2A, then ask the demo's two questions."""
    from agents.scaffold.peers import Peers
    from protocol.payloads import AnswerRequest
    from scriptorium.ask import ask, render
    from scriptorium.corpora import DEMO_QUESTIONS
    from scriptorium.inline import INGEST_TIMEOUT_S, ingest_documents

    out.print(
        f"ingesting {len(documents)} documents (space-exploration articles from a packaged "
        "Wikipedia extract, and this project's docs) through the retriever (A2A 'ingest')"
    )

    def batch_done(number: int, batches: int, report: IngestReport) -> None:
        console.print(f"  ingest: batch {number}/{batches}, {report.chunks} chunks")

    def progress(line: str, data: dict[str, object]) -> None:
        console.print(f"[dim]{line}[/]")

    async with Peers.over_http(
        settings, registry_url=registry_url, request_timeout_s=INGEST_TIMEOUT_S
    ) as peers:
        report = await ingest_documents(
            peers, documents, max_bytes=settings.max_request_bytes, on_batch=batch_done
        )
        out.print(
            f"  {report.ingested} new, {report.replaced} replaced, {report.unchanged} "
            f"unchanged, {report.chunks} chunks written"
        )
        for question in DEMO_QUESTIONS:
            out.rule(f"[bold]{question}")
            answer = await ask(AnswerRequest(question=question), peers, on_progress=progress)
            render(answer, out)
    out.print(
        "SmolLM2-135M runs on the CPU here: fluent, not wise. The writer's citation repair, the "
        "critic and the extractive fallback keep its answers grounded; a GPU runs a capable "
        "model with --model."
    )
