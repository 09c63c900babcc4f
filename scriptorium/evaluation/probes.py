"""Critic probes: planted errors and true sentences sent alone to the critic, and its scores.

In each answerable question's gold passage, the sentence that holds a gold answer is corrupted
with the critic's own training generators (:class:`agents.critic.training.errors.Planter`,
:class:`agents.critic.training.rewrites.Editor`) and sent, alone, as a draft citing that
passage.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.common.grounding.text import passage_sentences
from protocol.payloads import Answer, Critique, CritiqueRequest, Draft, DraftSentence, Passage
from protocol.text import render_sentence
from scriptorium.evaluation.devset import DevQuestion, answer_matches
from scriptorium.evaluation.scoring import ratio

#: Planted error types, named after the training generator's negatives they reuse.
ERROR_TYPES = (
    "swapped_number",
    "swapped_entity",
    "negated",
    "extra_clause",
    "other_passage",
    "wrong_citation",
)


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
        """The claim carries a planted error."""
        return self.kind in ERROR_TYPES


def gold_sentence(answer: Answer, q: DevQuestion) -> tuple[int, str] | None:
    """The first passage sentence of a gold document that holds a gold answer, and its number."""
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
    from agents.critic.training.errors import Planter
    from agents.critic.training.rewrites import Editor

    found = gold_sentence(answer, q)
    if found is None:
        return []
    number, sentence = found
    passage = answer.passages[number - 1]
    passages = tuple(answer.passages)
    rng = random.Random(f"{seed}:{q.id}")
    editor, planter = Editor(rng), Planter(rng)
    others = [
        (n, p)
        for n, p in enumerate(answer.passages, start=1)
        if p.document_id not in q.gold_documents
    ]
    donor_sentences = [
        s for _, p in others for s in passage_sentences(p.text) if len(s.split()) >= 4
    ]
    claims: dict[str, str | None] = {
        "swapped_number": planter.swap_number(sentence, passage.text),
        "swapped_entity": _first(
            planter.swap_entity(sentence, passage.text, p.text) for _, p in others
        ),
        "negated": planter.negate(sentence),
        "extra_clause": _first(planter.add_clause(sentence, d) for d in donor_sentences[:6]),
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
    """The first candidate that is not None."""
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
