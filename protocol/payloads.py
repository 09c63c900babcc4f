"""Typed payloads that agents exchange as A2A data parts.

A request names its skill in the message metadata (``{"skill": "search"}``) and carries the
skill's request model as one data part; results come back as data parts of task artifacts.
Every model rejects unknown fields, so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FilterValue = str | int | float | bool | list[str] | list[int] | list[float]


class Payload(BaseModel):
    """Base of every payload: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid")


# --- retriever -------------------------------------------------------------------------


class SearchRequest(Payload):
    """Hybrid search over one collection."""

    query: str = Field(min_length=1, max_length=4096)
    k: int = Field(default=5, ge=1, le=100)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="0 = BM25 only, 1 = vector only")
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    collection: str = "default"


class Passage(Payload):
    """A retrieved chunk with where it came from."""

    chunk_id: str
    document_id: str
    source: str
    text: str
    score: float
    start: int = 0
    end: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResult(Payload):
    """Passages for a query, best first."""

    query: str
    passages: list[Passage]


class Document(Payload):
    """A document handed over inline for ingestion."""

    text: str = Field(min_length=1)
    source: str
    id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestRequest(Payload):
    """Documents inline and/or paths on the retriever's machine."""

    documents: list[Document] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    collection: str = "default"


class SkippedFile(Payload):
    """A file that was not ingested, and why."""

    source: str
    reason: str


class IngestReport(Payload):
    """What an ingestion did."""

    ingested: int = 0
    unchanged: int = 0
    replaced: int = 0
    chunks: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)


# --- writer and critic -------------------------------------------------------------------


class Draft(Payload):
    """An answer whose sentences cite passages as ``[n]`` (1-based)."""

    text: str
    citations: list[int] = Field(default_factory=list)


class WriteRequest(Payload):
    """Draft an answer, or revise ``previous`` following ``feedback``."""

    question: str = Field(min_length=1)
    passages: list[Passage]
    previous: Draft | None = None
    feedback: list[str] = Field(default_factory=list)


class SentenceCheck(Payload):
    """The critic's finding on one sentence."""

    sentence: str
    citations: list[int]
    supported: bool
    reason: str = ""


class CritiqueRequest(Payload):
    """Check a draft against the passages it cites."""

    question: str
    draft: Draft
    passages: list[Passage]


class Verdict(Payload):
    """Accept, or revise with actionable feedback."""

    verdict: Literal["accept", "revise"]
    sentences: list[SentenceCheck] = Field(default_factory=list)
    feedback: list[str] = Field(default_factory=list)


# --- inference ---------------------------------------------------------------------------


class ChatMessage(Payload):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(Payload):
    """Chat messages and sampling parameters for the inference agent."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = Field(
        default=False, description="Generate exactly max_tokens (for benchmarks)."
    )
    model: str | None = Field(default=None, description="Default: the agent's model.")


class Usage(Payload):
    """Token counts and timings of one generation."""

    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    duration_ms: float


class Generation(Payload):
    """The final text of a generation."""

    text: str
    finish_reason: str | None = None
    model: str
    usage: Usage


# --- orchestrator ------------------------------------------------------------------------


class AnswerRequest(Payload):
    """A user's question."""

    question: str = Field(min_length=1, max_length=4096)
    k: int = Field(default=5, ge=1, le=50)
    max_rounds: int = Field(default=3, ge=1, le=10)
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    collection: str = "default"


class Answer(Payload):
    """A grounded answer with the passages it cites and the critic's last verdict."""

    question: str
    text: str
    passages: list[Passage]
    verdict: Verdict | None = None
    rounds: int
    session_id: str


PAYLOADS: dict[str, type[Payload]] = {
    model.__name__: model
    for model in (
        SearchRequest,
        SearchResult,
        Passage,
        Document,
        IngestRequest,
        IngestReport,
        WriteRequest,
        Draft,
        CritiqueRequest,
        Verdict,
        GenerateRequest,
        Generation,
        AnswerRequest,
        Answer,
    )
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by model name."""
    return {name: model.model_json_schema() for name, model in PAYLOADS.items()}
