"""The retriever agent: skills ``search`` and ``ingest`` over the shared document store.

A search runs in a ``retrieval {collection}`` span (GenAI semantic conventions: the query,
the collection as data source, k, and what was found).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from opentelemetry.trace import Span

from agents.retriever.ingest import IngestStats
from agents.retriever.library import Library, report
from agents.retriever.readers import iter_paths
from agents.retriever.settings import RetrieverSettings
from agents.retriever.store.base import StoreError, StoreUnavailable
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import BadRequest, SkillCall, SkillError
from agents.scaffold.settings import AgentSettings
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.payloads import IngestRequest, SearchRequest, SearchResult

CARD = CardSpec(
    name="retriever",
    description="Owns the shared document store: ingests documents and runs hybrid search.",
    capacity=32,
    skills=[
        Skill(
            id="search",
            name="Search passages",
            description=(
                "Hybrid BM25 + vector search with metadata filters (SearchRequest). An unknown "
                "collection is rejected naming the known ones; an empty one finds nothing and "
                "says so in a status update ({empty: true})."
            ),
            tags=["retrieval", "search", "hybrid"],
            examples=['{"query": "session negotiation", "k": 5, "alpha": 0.5}', "queen bee"],
            input_modes=("application/json", "text/plain"),
            output_modes=("application/json",),
        ),
        Skill(
            id="ingest",
            name="Ingest documents",
            description=(
                "Chunk, embed and upsert inline documents or server-side paths under the "
                "ingest roots (IngestRequest); streams progress; cancellable."
            ),
            tags=["retrieval", "ingestion"],
            examples=['{"paths": ["docs/"], "collection": "default"}'],
            input_modes=("application/json",),
            output_modes=("application/json",),
            operator_only=True,  # writes the shared store: operators only
        ),
    ],
    primary_skill="search",
)


def search_request(text: str) -> SearchRequest:
    """A plain text message searches for its words with the default settings."""
    return SearchRequest(query=text)


class Retriever:
    """The retriever's skills over one library (opened in the agent's lifespan)."""

    def __init__(self, settings: RetrieverSettings) -> None:
        self.settings = settings
        self._library: Library | None = None

    @property
    def library(self) -> Library:
        if self._library is None:
            raise SkillError("the retriever is still starting; try again in a moment")
        return self._library

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self._library = await Library.open(self.settings)
        try:
            yield
        finally:
            await self._library.close()
            self._library = None

    async def search(self, call: SkillCall) -> None:
        request = call.parse(SearchRequest, from_text=search_request)
        if not request.query.strip():
            raise BadRequest("empty query: give the words to search for")
        try:
            with telemetry.tracer().start_as_current_span(
                f"retrieval {request.collection}",
                attributes={
                    telemetry.OPERATION: "retrieval",
                    telemetry.DATA_SOURCE: request.collection,
                    telemetry.RETRIEVAL_QUERY: request.query,
                    telemetry.RETRIEVAL_TOP_K: request.k,
                },
            ) as span:
                result = await self.library.search(request)
                record_hits(span, result)
            empty = not result.passages and await self.library.is_empty(request.collection)
        except StoreUnavailable as exc:
            raise SkillError(str(exc)) from exc
        except StoreError as exc:  # an unknown collection too: the message lists the known ones
            raise BadRequest(str(exc)) from exc
        if empty:
            await call.progress(
                f"collection {request.collection!r} is empty; ingest documents into it first",
                empty=True,
                collection=request.collection,
            )
        await call.emit(result)

    async def ingest(self, call: SkillCall) -> None:
        request = call.parse(IngestRequest)
        if not request.documents and not request.paths:
            raise BadRequest("nothing to ingest: give documents or paths")
        try:
            paths = self.library.check_paths(request.paths)
        except StoreError as exc:
            raise BadRequest(str(exc)) from exc

        # Files are counted for server-side paths; inline documents are counted as documents
        # (the caller knows which of its files they came from).
        files_total = (
            await asyncio.to_thread(lambda: sum(1 for _ in iter_paths(paths))) if paths else 0
        )

        async def progress(stats: IngestStats) -> None:
            files = {"files": len(stats.files), "files_total": files_total} if paths else {}
            counted = f"{files['files']}/{files_total} files, " if files else ""
            await call.progress(
                f"{counted}{stats.documents} documents, {stats.chunks} chunks "
                f"({stats.chunks_per_s:.0f} chunks/s)",
                **files,
                documents=stats.documents,
                chunks=stats.chunks,
                chunks_per_s=round(stats.chunks_per_s, 1),
                skipped=len(stats.skipped),
            )

        try:
            stats = await self.library.ingest(
                paths=paths,
                documents=request.documents,
                collection=request.collection,
                on_progress=progress,
            )
        except StoreUnavailable as exc:
            raise SkillError(str(exc)) from exc
        except StoreError as exc:
            raise BadRequest(str(exc)) from exc
        await call.emit(report(stats))


def record_hits(span: Span, result: SearchResult) -> None:
    """What a search found, on its span: how many passages, and each one's id and score."""
    if span.is_recording():
        documents = [{"id": p.chunk_id, "score": round(p.score, 4)} for p in result.passages]
        span.set_attributes(
            {
                telemetry.RETRIEVAL_HITS: len(result.passages),
                telemetry.RETRIEVAL_DOCUMENTS: json.dumps(documents),
            }
        )


def build(settings: AgentSettings) -> AgentParts:
    """The retriever's parts (its own settings are read from the environment)."""
    return parts(RetrieverSettings(**settings.model_dump(exclude_unset=True)))


def parts(settings: RetrieverSettings) -> AgentParts:
    """The retriever's parts for explicit settings."""
    retriever = Retriever(settings)
    return AgentParts(
        card=CARD,
        handlers={"search": retriever.search, "ingest": retriever.ingest},
        lifespan=retriever.lifespan,
    )
