"""The critic's verdict metrics (beside the scaffold's task metrics on ``/metrics``)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter

from protocol.payloads import Critique, SentenceVerdictKind

VERDICTS = ("accept", "revise")

CRITIQUES = Counter(
    "scriptorium_critic_verdicts_total",
    "Drafts critiqued, by verdict (accept, revise).",
    ["verdict"],
)
SENTENCES = Counter(
    "scriptorium_critic_sentence_verdicts_total",
    "Draft sentences checked, by verdict (supported, unsupported, uncited, bad_citation).",
    ["verdict"],
)
for _verdict in VERDICTS:
    CRITIQUES.labels(_verdict)
for _kind in get_args(SentenceVerdictKind):
    SENTENCES.labels(_kind)


def record_critique(critique: Critique) -> None:
    """Count one critique and each of its sentence verdicts."""
    CRITIQUES.labels(critique.verdict).inc()
    for sentence in critique.sentences:
        SENTENCES.labels(sentence.verdict).inc()
