"""Scoring answers: retrieval, gold answers, citations, abstention, per round and final.

Pure functions over :class:`~protocol.payloads.Answer` objects, so they are tested on
hand-built answers; ``docs/evaluation.md`` defines every metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.payloads import Answer, Passage
from scriptorium.evaluation.devset import DevQuestion, answer_matches

#: Retrieval is judged on the first round's top passages.
TOP_K = 5


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
