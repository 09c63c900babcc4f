"""The orchestrator's answer metrics (beside the scaffold's task metrics on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from protocol.payloads import Answer

#: Critic verdicts an answer ends with.
VERDICTS = ("accept", "revise")

ANSWERS = Counter(
    "scriptorium_orchestrator_answers_total",
    "Answers given, by the critic's final verdict (accept, revise).",
    ["verdict"],
)
ROUNDS = Histogram(
    "scriptorium_orchestrator_answer_rounds",
    "Retrieve-write-critique rounds an answer took (the extractive fallback not counted).",
    buckets=(1, 2, 3, 4, 5, 6),
)
EXTRACTIVE = Counter(
    "scriptorium_orchestrator_extractive_fallbacks_total",
    "Answers that ran out of rounds and quote the passages instead.",
)
ABSTENTIONS = Counter(
    "scriptorium_orchestrator_abstentions_total",
    "Answers saying the documents do not say (or that the collection is empty).",
)
for _verdict in VERDICTS:
    ANSWERS.labels(_verdict)


def record_answer(answer: Answer) -> None:
    """Count one finished answer."""
    ANSWERS.labels(answer.verdict).inc()
    ROUNDS.observe(answer.rounds)
    if answer.extractive:
        EXTRACTIVE.inc()
    if answer.abstained:
        ABSTENTIONS.inc()
