"""``scriptorium eval``: the dev set asked through a running team, and scored.

What a run does, in order:

1. start a stack of its own (free ports, a temporary data dir, nothing persisted), or use
   the one at ``--registry-url``;
2. ingest :func:`~scriptorium.corpora.eval_documents` (the dev set's gold and related
   articles plus seeded distractors) into collection ``eval`` through the retriever over A2A,
   in batches under the request size limit (idempotent: a second run adds nothing);
3. ask every question through the orchestrator (skill ``answer``), a few at a time;
4. probe the critic with planted errors: in each answerable question's gold passage, the
   sentence that holds a gold answer is corrupted with the critic's own training generators
   (:class:`agents.critic.training.Editor`) and sent, alone, as a draft citing that passage;
5. score: retrieval, answers, citations, abstention, the critic, per round and final.

The scoring functions are pure (they take :class:`~protocol.payloads.Answer` objects), so
they are tested on hand-built answers; ``docs/evaluation.md`` defines every metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.retriever.readers import SourceDocument
from agents.scaffold.peers import Peers
from protocol.payloads import (
    Answer,
    AnswerRequest,
    Critique,
    CritiqueRequest,
    Draft,
    DraftSentence,
    IngestReport,
    Passage,
)
from protocol.settings import CommonSettings
from protocol.text import render_sentence
from scriptorium.evaluation.devset import DevQuestion, answer_matches, load_devset

#: The collection the dev-set corpus is ingested into.
EVAL_COLLECTION = "eval"
#: Retrieval is judged on the first round's top passages.
TOP_K = 5
#: Planted error types, named after the training generator's negatives they reuse.
ERROR_TYPES = (
    "swapped_number",
    "swapped_entity",
    "negated",
    "extra_clause",
    "other_passage",
    "wrong_citation",
)
#: Longest wait for the next event of a call (an answer's rounds on a busy CPU).
TIMEOUT_S = 900.0

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- What is scored -----------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredSentence:
    """One sentence as the user would see it: which documents it cites, what the critic said."""

    documents: tuple[str, ...]  # document id of each citation, in order
    supported: bool  # the critic's verdict is "supported"
    marked: bool  # shown marked as unsupported


@dataclass(frozen=True)
class View:
    """An answer (final, or the draft after some round) reduced to what the metrics read."""

    text: str
    sentences: tuple[ScoredSentence, ...]
    abstained: bool
    extractive: bool
    accepted: bool


def final_view(answer: Answer) -> View:
    """The answer the user gets."""
    return View(
        text=answer.text,
        sentences=tuple(
            ScoredSentence(
                documents=tuple(c.document_id for c in s.citations),
                supported=s.verdict == "supported",
                marked=s.unsupported,
            )
            for s in answer.sentences
        ),
        abstained=answer.abstained,
        extractive=answer.extractive,
        accepted=answer.verdict == "accept",
    )


def round_view(answer: Answer, round_number: int) -> View:
    """The draft the question had after ``round_number`` (from ``Answer.history``).

    A question accepted in an earlier round keeps its accepted draft; a question with no
    history (an empty store) is its final answer. Passage numbers of every round index
    ``Answer.passages``: the loop only appends passages, so numbers stay stable.
    """
    history = [r for r in answer.history if r.round <= round_number]
    if not history:
        return final_view(answer)
    record = history[-1]
    checks = record.critique.sentences if record.critique is not None else []
    sentences = []
    for index, sentence in enumerate(record.draft.sentences):
        check = checks[index] if index < len(checks) else None
        sentences.append(
            ScoredSentence(
                documents=tuple(
                    answer.passages[n - 1].document_id
                    for n in sentence.citations
                    if 1 <= n <= len(answer.passages)
                ),
                supported=check is not None and check.verdict == "supported",
                marked=sentence.unsupported,
            )
        )
    return View(
        text=record.draft.text,
        sentences=tuple(sentences),
        abstained=record.draft.abstained,
        extractive=record.draft.extractive,
        accepted=record.critique is not None and record.critique.verdict == "accept",
    )


def contains_gold(view: View, q: DevQuestion) -> bool:
    """The answer states a gold answer (an abstention never does, whatever it names)."""
    return not view.abstained and answer_matches(view.text, q)


def first_round_passages(answer: Answer, k: int = TOP_K) -> list[Passage]:
    """The first ``k`` passages of round 1 (the first of ``Answer.passages``)."""
    found = answer.history[0].passages if answer.history else len(answer.passages)
    return answer.passages[: min(k, found)]


def ratio(part: float, whole: float) -> float | None:
    """``part / whole`` rounded, or None (JSON null) when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def answer_metrics(scored: Sequence[tuple[DevQuestion, View]]) -> dict[str, Any]:
    """The answer metrics over (question, view) pairs; see docs/evaluation.md."""
    answerable = [(q, v) for q, v in scored if q.kind != "unanswerable"]
    unanswerable = [v for q, v in scored if q.kind == "unanswerable"]
    citations = gold_citations = sentences = gold_sentences = 0
    for q, view in answerable:
        gold = set(q.gold_documents)
        for sentence in view.sentences:
            citations += len(sentence.documents)
            gold_citations += sum(d in gold for d in sentence.documents)
            sentences += 1
            gold_sentences += any(d in gold for d in sentence.documents)
    every = [s for _, v in scored for s in v.sentences]
    by_kind: dict[str, float | None] = {}
    for kind in ("single", "two_doc"):
        of_kind = [(q, v) for q, v in answerable if q.kind == kind]
        by_kind[kind] = ratio(sum(contains_gold(v, q) for q, v in of_kind), len(of_kind))
    return {
        "questions": len(scored),
        "answer_contains_gold": ratio(
            sum(contains_gold(v, q) for q, v in answerable), len(answerable)
        ),
        "answer_contains_gold_by_kind": by_kind,
        "citation_precision": ratio(gold_citations, citations),
        "citation_recall": ratio(gold_sentences, sentences),
        "unmarked_unsupported_sentences": sum(not s.supported and not s.marked for s in every),
        "supported_sentence_rate": ratio(sum(s.supported for s in every), len(every)),
        "abstained_on_unanswerable": ratio(
            sum(v.abstained for v in unanswerable), len(unanswerable)
        ),
        "false_abstention_rate": ratio(sum(v.abstained for _, v in answerable), len(answerable)),
        "extractive_rate": ratio(sum(v.extractive for _, v in scored), len(scored)),
        "accepted_rate": ratio(sum(v.accepted for _, v in scored), len(scored)),
        "sentences": len(every),
        "citations": citations,
    }


def retrieval_metrics(answered: Sequence[tuple[DevQuestion, Answer]]) -> dict[str, Any]:
    """Whether round 1's top passages hold the gold documents (answerable questions)."""
    hits: dict[str, list[bool]] = {"single": [], "two_doc": []}
    all_gold: list[bool] = []
    for q, answer in answered:
        if q.kind == "unanswerable":
            continue
        found = {p.document_id for p in first_round_passages(answer)}
        hits[q.kind].append(bool(found & set(q.gold_documents)))
        if q.kind == "two_doc":
            all_gold.append(set(q.gold_documents) <= found)
    every = hits["single"] + hits["two_doc"]
    return {
        "retrieval_hit_at_5": ratio(sum(every), len(every)),
        "retrieval_hit_at_5_by_kind": {k: ratio(sum(v), len(v)) for k, v in hits.items()},
        "retrieval_all_gold_at_5": ratio(sum(all_gold), len(all_gold)),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- Critic probes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One sentence sent alone to the critic, citing one passage."""

    question: DevQuestion
    kind: str  # an ERROR_TYPES name, "true" (the gold sentence) or "edited" (a light rewrite)
    claim: str
    cited: int  # 1-based number in the answer's passages
    passages: tuple[Passage, ...]

    @property
    def planted(self) -> bool:
        return self.kind in ERROR_TYPES


def gold_sentence(answer: Answer, q: DevQuestion) -> tuple[int, str] | None:
    """The first passage sentence of a gold document that holds a gold answer, and its number."""
    from agents.common.grounding import passage_sentences

    for number, passage in enumerate(answer.passages, start=1):
        if passage.document_id not in q.gold_documents:
            continue
        for sentence in passage_sentences(passage.text):
            if len(sentence.split()) >= 4 and answer_matches(sentence, q):
                return number, sentence
    return None


def critic_probes(answer: Answer, q: DevQuestion, seed: int = 0) -> list[Probe]:
    """Planted errors and true sentences for one answerable question (none if no gold sentence).

    Errors come from the critic's training generators; donors (names, clauses, whole
    sentences, a wrong passage to cite) come from the answer's non-gold passages.
    """
    from agents.common.grounding import passage_sentences
    from agents.critic.training import Editor

    found = gold_sentence(answer, q)
    if found is None:
        return []
    number, sentence = found
    passage = answer.passages[number - 1]
    passages = tuple(answer.passages)
    editor = Editor(random.Random(f"{seed}:{q.id}"))
    others = [
        (n, p)
        for n, p in enumerate(answer.passages, start=1)
        if p.document_id not in q.gold_documents
    ]
    donor_sentences = [
        s for _, p in others for s in passage_sentences(p.text) if len(s.split()) >= 4
    ]
    claims: dict[str, str | None] = {
        "swapped_number": editor.swap_number(sentence, passage.text),
        "swapped_entity": _first(
            editor.swap_entity(sentence, passage.text, p.text) for _, p in others
        ),
        "negated": editor.negate(sentence),
        "extra_clause": _first(editor.add_clause(sentence, d) for d in donor_sentences[:6]),
        "other_passage": donor_sentences[0] if donor_sentences else None,
    }
    probes = [
        Probe(q, kind, claim, number, passages)
        for kind, claim in claims.items()
        if claim is not None and claim != sentence
    ]
    if others:
        probes.append(Probe(q, "wrong_citation", sentence, others[0][0], passages))
    siblings = passage_sentences(passage.text)
    title = str(passage.metadata.get("title") or passage.source.partition(":")[2])
    edited, _ = editor.edit(sentence, siblings, title)
    probes.append(Probe(q, "true", sentence, number, passages))
    probes.append(Probe(q, "edited", edited, number, passages))
    return probes


def _first(candidates: Iterable[str | None]) -> str | None:
    return next((c for c in candidates if c is not None), None)


def probe_request(probe: Probe) -> CritiqueRequest:
    """The probe as a one-sentence draft for the critic."""
    sentence = DraftSentence(text=probe.claim, citations=[probe.cited], origin="model")
    draft = Draft(text=render_sentence(probe.claim, [probe.cited]), sentences=[sentence])
    return CritiqueRequest(
        question=probe.question.question, draft=draft, passages=list(probe.passages)
    )


def flagged(critique: Critique, *, sentence_only: bool = False) -> bool:
    """The critic rejects the draft (verdict revise) or its sentence (not supported)."""
    sentence_rejected = not critique.sentences or critique.sentences[0].verdict != "supported"
    return sentence_rejected if sentence_only else sentence_rejected or critique.verdict == "revise"


def critic_metrics(results: Sequence[tuple[Probe, Critique | None]]) -> dict[str, Any]:
    """Recall on planted errors, false rejects of true and lightly edited sentences."""
    judged = [(p, c) for p, c in results if c is not None]

    def rate(kinds: Iterable[str], *, sentence_only: bool = False) -> float | None:
        wanted = set(kinds)
        chosen = [c for p, c in judged if p.kind in wanted]
        return ratio(sum(flagged(c, sentence_only=sentence_only) for c in chosen), len(chosen))

    counts = Counter(p.kind for p, _ in judged)
    return {
        "critic_recall_planted": rate(ERROR_TYPES),
        "critic_recall_planted_by_type": {
            kind: {"recall": rate([kind]), "n": counts[kind]} for kind in ERROR_TYPES
        },
        "critic_false_reject_rate": rate(["true"]),
        "critic_false_reject_rate_edited": rate(["edited"]),
        "critic_sentence_level": {
            "recall_planted": rate(ERROR_TYPES, sentence_only=True),
            "false_reject_rate": rate(["true"], sentence_only=True),
            "false_reject_rate_edited": rate(["edited"], sentence_only=True),
        },
        "critic_probes": len(judged),
        "critic_questions": len({p.question.id for p, _ in judged}),
        "critic_errors": sum(c is None for _, c in results),
    }


# --- The report -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One question asked: its answer, or the error that ended it."""

    question: DevQuestion
    answer: Answer | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RunInfo:
    """What the report says about the run itself."""

    options: dict[str, Any] = field(default_factory=dict)
    ingest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    log_dir: str | None = None


def report(
    outcomes: Sequence[Outcome],
    probes: Sequence[tuple[Probe, Critique | None]],
    rounds: int,
    info: RunInfo | None = None,
) -> dict[str, Any]:
    """Every metric of a run (see docs/evaluation.md for the definitions)."""
    answered = [(o.question, o.answer) for o in outcomes if o.answer is not None]
    final = answer_metrics([(q, final_view(a)) for q, a in answered])
    per_round: dict[str, dict[str, Any]] = {
        str(r): answer_metrics([(q, round_view(a, r)) for q, a in answered])
        for r in range(1, rounds + 1)
    }
    per_round["final"] = final
    latencies = [o.seconds for o in outcomes if o.answer is not None]
    p50 = percentile(latencies, 50)
    p90 = percentile(latencies, 90)
    failed = [o for o in outcomes if o.answer is None]
    result: dict[str, Any] = {
        "questions": len(outcomes),
        "questions_by_kind": dict(Counter(o.question.kind for o in outcomes)),
        "answered": len(answered),
        "errors": len(failed),
        "error_details": [{"id": o.question.id, "error": o.error} for o in failed],
        **retrieval_metrics(answered),
        **{k: v for k, v in final.items() if k != "questions"},
        **critic_metrics(probes),
        "rounds_mean": round(statistics.mean(a.rounds for _, a in answered), 3)
        if answered
        else None,
        "latency_p50_s": round(p50, 2) if p50 is not None else None,
        "latency_p90_s": round(p90, 2) if p90 is not None else None,
        "per_round": per_round,
    }
    if info is not None:
        result.update(
            options=info.options,
            ingest=info.ingest,
            seconds=round(info.seconds, 1),
            log_dir=info.log_dir,
        )
    return result


# --- Running it -------------------------------------------------------------------------------


def select(devset: Sequence[DevQuestion], limit: int | None) -> list[DevQuestion]:
    """The first ``limit`` questions with the kinds in the dev set's proportions.

    Questions are interleaved by their relative position within their kind, so any prefix
    samples every kind in proportion; the dev set order is kept within a kind.
    """
    if limit is None or limit >= len(devset):
        return list(devset)
    sizes = Counter(q.kind for q in devset)
    seen: Counter[str] = Counter()
    keyed = []
    for index, q in enumerate(devset):
        keyed.append(((seen[q.kind] + 0.5) / sizes[q.kind], index, q))
        seen[q.kind] += 1
    return [q for _, _, q in sorted(keyed, key=lambda t: (t[0], t[1]))][: max(0, limit)]


async def ingest_corpus(
    peers: Peers,
    documents: Sequence[SourceDocument],
    collection: str,
    settings: CommonSettings,
    progress: Progress = _stderr,
) -> IngestReport:
    """Ingest ``documents`` inline through the retriever (skill ``ingest``) over A2A."""
    from agents.retriever.library import document_payload
    from scriptorium.inline import ingest_documents

    def batch_done(number: int, batches: int, got: IngestReport) -> None:
        progress(
            f"ingest {number}/{batches}: into {collection!r} ({got.ingested} new, "
            f"{got.unchanged} unchanged, {got.chunks} chunks)"
        )

    return await ingest_documents(
        peers,
        [document_payload(doc) for doc in documents],
        collection,
        max_bytes=settings.max_request_bytes,
        on_batch=batch_done,
    )


@contextlib.asynccontextmanager
async def own_stack(
    name: str, env: dict[str, str] | None = None, progress: Progress = _stderr
) -> AsyncIterator[tuple[CommonSettings, str, Path]]:
    """A whole stack on free ports with a temporary data dir; yields settings, URL, log dir.

    Nothing is persisted; afterwards only the logs are left (their folder is yielded).
    """
    from scriptorium.launcher import Stack

    data_dir = Path(tempfile.mkdtemp(prefix=f"scriptorium-{name}-"))
    settings = CommonSettings(data_dir=data_dir, redis_prefix=f"scriptorium-{name}")
    stack = Stack(settings, ephemeral=True, persist=False, env=env)
    progress(f"starting a stack (vLLM takes ~35 s to load); logs in {stack.log_dir}")
    started = time.perf_counter()
    try:
        await asyncio.to_thread(stack.start)
        await asyncio.to_thread(stack.wait_healthy, 600)
        progress(f"stack healthy after {time.perf_counter() - started:.0f}s: {stack.registry_url}")
        yield stack.settings, stack.registry_url, stack.log_dir  # with its token, if made
    finally:
        await asyncio.to_thread(stack.stop)
        await asyncio.to_thread(_keep_only, data_dir, stack.log_dir)


def _keep_only(folder: Path, kept: Path) -> None:
    """Delete everything in ``folder`` but ``kept``."""
    for child in folder.iterdir():
        if child == kept:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def ask_all(
    questions: Sequence[DevQuestion],
    peers: Peers,
    *,
    rounds: int,
    concurrency: int,
    progress: Progress = _stderr,
    max_tokens: int = 160,
    collection: str = EVAL_COLLECTION,
) -> list[Outcome]:
    """Ask every question (at most ``concurrency`` at once); failures become outcomes too."""
    from scriptorium.ask import ask

    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(q: DevQuestion) -> Outcome:
        nonlocal done
        request = AnswerRequest(
            question=q.question,
            k=TOP_K,
            max_rounds=rounds,
            max_tokens=max_tokens,
            collection=collection,
        )
        async with gate:
            started = time.perf_counter()
            try:
                answer = await ask(request, peers)
                outcome = Outcome(q, answer=answer, seconds=time.perf_counter() - started)
            except Exception as exc:  # a failed task is a result to count, not a crash
                error = f"{type(exc).__name__}: {exc}"
                outcome = Outcome(q, error=error, seconds=time.perf_counter() - started)
        done += 1
        progress(f"[{done}/{len(questions)}] {_summary(outcome)}")
        return outcome

    return list(await asyncio.gather(*(one(q) for q in questions)))


def _summary(outcome: Outcome) -> str:
    q, answer = outcome.question, outcome.answer
    head = f"{q.id} ({q.kind}) {outcome.seconds:.1f}s"
    if answer is None:
        return f"{head} ERROR {outcome.error}"
    view = final_view(answer)
    state = "abstained" if answer.abstained else "extractive" if answer.extractive else "written"
    match = "-" if q.kind == "unanswerable" else ("gold" if contains_gold(view, q) else "miss")
    return f"{head} {answer.verdict} r{answer.rounds} {state} {match}: {answer.text[:90]!r}"


async def probe_critic(
    outcomes: Sequence[Outcome],
    peers: Peers,
    *,
    concurrency: int,
    seed: int = 0,
    progress: Progress = _stderr,
) -> list[tuple[Probe, Critique | None]]:
    """Send every probe of every answered, answerable question to the critic over A2A."""
    probes = [
        probe
        for o in outcomes
        if o.answer is not None and o.question.kind != "unanswerable"
        for probe in critic_probes(o.answer, o.question, seed)
    ]
    progress(f"critic: {len(probes)} probes from {len({p.question.id for p in probes})} questions")
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(probe: Probe) -> tuple[Probe, Critique | None]:
        async with gate:
            try:
                critique = await peers.call("critique", probe_request(probe), result=Critique)
            except Exception as exc:  # counted as critic_errors
                progress(f"critic probe {probe.question.id}/{probe.kind} failed: {exc}")
                return probe, None
        return probe, critique

    return list(await asyncio.gather(*(one(p) for p in probes)))


@dataclass(frozen=True)
class EvalOptions:
    """The options of ``scriptorium eval``."""

    limit: int | None = None
    concurrency: int = 2
    rounds: int = 3
    registry_url: str | None = None
    structured: bool = False
    seed: int = 0
    save_answers: Path | None = None


def save_outcomes(outcomes: Sequence[Outcome], path: Path) -> None:
    """One JSON line per question: its id, kind, seconds, and the answer or the error."""
    with path.open("w", encoding="utf-8") as file:
        for o in outcomes:
            record = {
                "id": o.question.id,
                "kind": o.question.kind,
                "seconds": round(o.seconds, 2),
                "error": o.error,
                "answer": o.answer.model_dump(mode="json") if o.answer is not None else None,
            }
            file.write(json.dumps(record) + "\n")


def critic_model() -> dict[str, Any]:
    """When the critic's grounding model in the model cache was trained, and its threshold."""
    from agents.common.grounding import model_dir, read_manifest
    from agents.scaffold.settings import AgentSettings

    manifest = read_manifest(model_dir(AgentSettings().resolved_model_cache_dir)) or {}
    return {"created": manifest.get("created"), "threshold": manifest.get("threshold")}


async def evaluate(options: EvalOptions, progress: Progress = _stderr) -> dict[str, Any]:
    """Run the evaluation and return its report."""
    from scriptorium.corpora import eval_documents

    if options.structured and options.registry_url:
        raise ValueError(
            "--structured sets the writer's environment, so it needs a stack of its own: "
            "drop --registry-url (or start that stack with SCRIPTORIUM_WRITER_STRUCTURED=true)"
        )
    started = time.perf_counter()
    devset = load_devset()
    questions = select(devset, options.limit)
    documents = eval_documents(devset)
    info = RunInfo(
        options={
            "limit": options.limit,
            "concurrency": options.concurrency,
            "rounds": options.rounds,
            "structured": options.structured,
            "own_stack": options.registry_url is None,
            "corpus_documents": len(documents),
        }
    )
    async with contextlib.AsyncExitStack() as scope:
        if options.registry_url is None:
            env = {"SCRIPTORIUM_WRITER_STRUCTURED": "true"} if options.structured else {}
            settings, registry_url, log_dir = await scope.enter_async_context(
                own_stack("eval", env, progress)
            )
            info.log_dir = str(log_dir)
            info.options["critic_model"] = critic_model()
        else:
            settings, registry_url = CommonSettings(), options.registry_url
        peers = await scope.enter_async_context(
            Peers.over_http(
                settings, caller="eval", registry_url=registry_url, request_timeout_s=TIMEOUT_S
            )
        )
        ingested = await ingest_corpus(peers, documents, EVAL_COLLECTION, settings, progress)
        info.ingest = ingested.model_dump(exclude={"skipped"}) | {"skipped": len(ingested.skipped)}
        progress(f"asking {len(questions)} questions, {options.concurrency} at a time")
        outcomes = await ask_all(
            questions,
            peers,
            rounds=options.rounds,
            concurrency=options.concurrency,
            progress=progress,
        )
        if options.save_answers is not None:
            await asyncio.to_thread(save_outcomes, outcomes, options.save_answers)
        probes = await probe_critic(
            outcomes,
            peers,
            concurrency=options.concurrency,
            seed=options.seed,
            progress=progress,
        )
    info.seconds = time.perf_counter() - started
    return report(outcomes, probes, options.rounds, info)


def render(result: dict[str, Any], console: Any) -> None:
    """The headline figures and the per-round table (Rich)."""
    from rich.table import Table

    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    headline = Table(title="evaluation", expand=False)
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    for key, value in result.items():
        if not isinstance(value, dict | list):
            headline.add_row(key, show(value))
    console.print(headline)
    rounds = Table(title="per round (the draft each question had after round r)", expand=False)
    columns = [
        "answer_contains_gold",
        "citation_precision",
        "citation_recall",
        "supported_sentence_rate",
        "accepted_rate",
        "false_abstention_rate",
        "abstained_on_unanswerable",
        "extractive_rate",
    ]
    rounds.add_column("round")
    for column in columns:
        rounds.add_column(column.replace("_", " "), justify="right")
    for name, metrics in result["per_round"].items():
        rounds.add_row(name, *(show(metrics[c]) for c in columns))
    console.print(rounds)
