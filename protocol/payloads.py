"""Typed payloads that agents exchange as A2A data parts.

A request names its skill in the message metadata (``{"skill": "search"}``) and carries the
skill's request model as one data part; results come back as data parts of task artifacts.
Every model rejects unknown fields, so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FilterValue = str | int | float | bool | list[str] | list[int] | list[float]


def integral_numbers(value: Any) -> Any:
    """``value`` with whole-number floats as ints, in nested dicts and lists too.

    A2A data parts are protobuf Structs, which carry every number as a double; a JSON Schema
    or metadata that went through one comes back with ``1.0`` where ``1`` was sent.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_numbers(item) for item in value]
    return value


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

CitationOrigin = Literal["model", "attached", "extractive"]
SentenceVerdictKind = Literal["supported", "unsupported", "uncited", "bad_citation"]


class DraftSentence(Payload):
    """One sentence of a draft: its text (no ``[n]`` markers) and the passages it cites."""

    text: str
    citations: list[int] = Field(default_factory=list, description="1-based passage numbers.")
    origin: CitationOrigin | None = Field(
        default=None,
        description="Who chose the citations: the model, attached afterwards by grounding, or "
        "an extractive quote. None when the sentence cites nothing.",
    )
    support: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Writer's support estimate for its citations."
    )
    unsupported: bool = Field(
        default=False, description="Nothing in the passages supports it; shown marked as such."
    )


class Draft(Payload):
    """An answer whose sentences cite passages as ``[n]`` (1-based)."""

    text: str = Field(description="The sentences rendered with their [n] markers.")
    sentences: list[DraftSentence] = Field(default_factory=list)
    extractive: bool = Field(default=False, description="Quoted from the passages, not written.")
    abstained: bool = Field(default=False, description="The passages do not hold the answer.")
    model: str | None = None
    completion_tokens: int = 0
    engine_ms: float = Field(default=0.0, description="Time spent inside the inference engine.")


class SentenceVerdict(Payload):
    """The critic's finding on one sentence of a draft."""

    index: int = Field(description="0-based position in the draft.")
    sentence: str
    citations: list[int]
    verdict: SentenceVerdictKind
    support: float = Field(ge=0.0, le=1.0, description="Best support among cited passages.")
    best_passage: int | None = Field(
        default=None, description="1-based passage that supports it best (any passage)."
    )
    best_support: float = Field(default=0.0, ge=0.0, le=1.0)
    best_span: str = Field(default="", description="The passage sentence that matches best.")
    feedback: str = ""


class Coverage(Payload):
    """Whether the passages hold what the question asks."""

    covered: bool
    missing_terms: list[str] = Field(default_factory=list)
    answer_type: str | None = Field(
        default=None, description="What kind of answer the question wants (number, date, ...)."
    )
    answer_type_found: bool = True


class Critique(Payload):
    """Accept, or revise with feedback the writer can act on sentence by sentence."""

    verdict: Literal["accept", "revise"]
    sentences: list[SentenceVerdict] = Field(default_factory=list)
    feedback: list[str] = Field(default_factory=list)
    coverage: Coverage
    judge: Literal["forest", "llm"] = "forest"


class WriteRequest(Payload):
    """Draft an answer, revise ``previous`` following ``critique``, or quote the passages.

    ``mode``: ``generate`` (the model writes; revises when ``previous`` is given),
    ``extractive`` (best-supported passage sentences, quoted with citations) or ``abstain``
    (say the documents do not hold the answer, with the closest passages).
    """

    question: str = Field(min_length=1, max_length=4096)
    passages: list[Passage] = Field(max_length=50)
    previous: Draft | None = None
    critique: Critique | None = None
    mode: Literal["generate", "extractive", "abstain"] = "generate"
    max_tokens: int = Field(default=160, ge=8, le=2048)
    structured: bool = Field(
        default=False, description="Ask the engine for JSON {sentences: [{text, citations}]}."
    )


class CritiqueRequest(Payload):
    """Check a draft against the passages it cites."""

    question: str = Field(min_length=1, max_length=4096)
    draft: Draft
    passages: list[Passage] = Field(max_length=50)


# --- inference ---------------------------------------------------------------------------


class ChatMessage(Payload):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(Payload):
    """Chat messages and sampling parameters for the inference agent."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int = Field(
        default=256, ge=1, description="Bounded by the engine's context (max_model_len)."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = None
    ignore_eos: bool = Field(
        default=False, description="Generate exactly max_tokens (for benchmarks)."
    )
    model: str | None = Field(default=None, description="Default: the agent's model.")
    json_schema: dict[str, Any] | None = Field(
        default=None,
        description="Constrain the output to this JSON Schema (vLLM structured outputs).",
    )


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


#: Keys the session log adds to a recorded result (its timing, the step it was replayed from).
RECORD_ANNOTATIONS = frozenset({"ms", "replayed"})


class RecordedResult(Payload):
    """A step's result taken from a recorded session instead of asking its agent again."""

    skill: Literal["search", "write", "critique"]
    result: dict[str, Any] = Field(description="The recorded SearchResult, Draft or Critique.")
    step: int = Field(ge=1, description="The recorded event it comes from (its seq).")


class AnswerRequest(Payload):
    """A user's question."""

    question: str = Field(min_length=1, max_length=4096)
    k: int = Field(default=5, ge=1, le=20)
    max_rounds: int = Field(default=3, ge=1, le=6)
    max_tokens: int = Field(default=160, ge=16, le=1024)
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    collection: str = Field(default="default", min_length=1, max_length=128)
    recorded: list[RecordedResult] = Field(
        default_factory=list,
        max_length=3 * 6,
        description="A fork (`scriptorium replay --from-step`): the first steps' results, "
        "used in order instead of calling the agents; the rest runs live.",
    )


class AnswerCitation(Payload):
    """A passage a sentence cites."""

    passage: int = Field(description="1-based number in Answer.passages.")
    chunk_id: str
    document_id: str
    source: str
    snippet: str
    support: float = Field(ge=0.0, le=1.0)
    origin: CitationOrigin


class AnswerSentence(Payload):
    """One sentence of the answer with its citations and the critic's verdict."""

    text: str
    citations: list[AnswerCitation] = Field(default_factory=list)
    verdict: SentenceVerdictKind
    support: float = Field(ge=0.0, le=1.0)
    unsupported: bool = Field(default=False, description="Openly marked as not supported.")


class RoundRecord(Payload):
    """What one round of the loop produced (for evaluation and replay)."""

    round: int
    query: str
    passages: int
    draft: Draft
    critique: Critique | None = None


class Answer(Payload):
    """A grounded answer: text, cited sentences, passages, the critic's verdict, timings."""

    question: str
    text: str
    sentences: list[AnswerSentence]
    passages: list[Passage]
    verdict: Literal["accept", "revise"]
    rounds: int
    extractive: bool = False
    abstained: bool = False
    session_id: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
    history: list[RoundRecord] = Field(default_factory=list)


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
        Critique,
        GenerateRequest,
        Generation,
        AnswerRequest,
        Answer,
    )
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by model name."""
    return {name: model.model_json_schema() for name, model in PAYLOADS.items()}
