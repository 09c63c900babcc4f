"""From support scores to a verdict: per-sentence findings and feedback the writer can act on.

Pure logic over the grounding model's scores, so it reads and tests on its own. A sentence is
``supported`` when a passage it cites clears the threshold; ``bad_citation`` when it cites a
passage that does not exist or does not support it while another passage does;
``uncited`` when it cites nothing; ``unsupported`` when no passage supports it. The draft is
accepted only when every sentence is supported (or, for an abstention, when the passages
really lack what the question asks).
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.common.grounding.grounder import CoverageReport, Support
from protocol.payloads import (
    Coverage,
    Critique,
    Draft,
    DraftSentence,
    SentenceVerdict,
    SentenceVerdictKind,
)
from protocol.text import parse_answer

SPAN_CHARS = 160


def draft_sentences(draft: Draft) -> list[DraftSentence]:
    """The draft's sentences (parsed from its text when the writer sent none)."""
    if draft.sentences or draft.abstained:
        return list(draft.sentences)
    return [
        DraftSentence(text=s.text, citations=list(s.citations)) for s in parse_answer(draft.text)
    ]


def review(
    draft: Draft,
    sentences: Sequence[DraftSentence],
    supports: Sequence[Sequence[Support]],
    coverage: CoverageReport,
    threshold: float,
    *,
    answer_type_given: bool = True,
    addresses_question: bool = True,
    judge: str = "forest",
) -> Critique:
    """The critique of one draft from its sentences' support rows (one row per sentence)."""
    checks = [
        _check(index, sentence, row, threshold)
        for index, (sentence, row) in enumerate(zip(sentences, supports, strict=True))
    ]
    feedback = [c.feedback for c in checks if c.verdict != "supported"]
    covers = Coverage(
        covered=coverage.covered,
        missing_terms=coverage.missing_terms,
        answer_type=coverage.answer_type,
        answer_type_found=coverage.answer_type_found,
    )
    if not coverage.covered and coverage.missing_terms:
        feedback.append(
            "the passages do not mention " + ", ".join(repr(t) for t in coverage.missing_terms)
        )
    if draft.abstained:
        accepted = not coverage.covered
        if not accepted:
            feedback.append(
                "the answer says the documents do not say, but the passages cover the "
                "question's terms: answer from them"
            )
    else:
        accepted = bool(checks) and all(c.verdict == "supported" for c in checks)
        if not checks:
            feedback.append("the answer is empty: answer the question from the passages")
        if checks and not addresses_question:
            accepted = False
            feedback.append(
                "the answer does not mention what the question asks about: say what the "
                "passages say about it, or that they do not say"
            )
        if accepted and coverage.answer_type_found and not answer_type_given:
            accepted = False
            feedback.append(
                f"the question asks for a {coverage.answer_type}, which the answer does "
                "not give; the passages contain one"
            )
    return Critique(
        verdict="accept" if accepted else "revise",
        sentences=checks,
        feedback=feedback,
        coverage=covers,
        judge="llm" if judge == "llm" else "forest",
    )


def _check(
    index: int, sentence: DraftSentence, row: Sequence[Support], threshold: float
) -> SentenceVerdict:
    number = index + 1
    cited = [n for n in sentence.citations if 1 <= n <= len(row)]
    invalid = [n for n in sentence.citations if not 1 <= n <= len(row)]
    best = max(row, key=lambda s: s.score) if row else None
    best_number = best.passage + 1 if best is not None else None
    best_score = best.score if best is not None else 0.0
    span = _clip(best.span) if best is not None else ""
    cited_score = max((row[n - 1].score for n in cited), default=0.0)
    base = SentenceVerdict(
        index=index,
        sentence=sentence.text,
        citations=list(sentence.citations),
        verdict="supported",
        support=_unit(cited_score),
        best_passage=best_number,
        best_support=_unit(best_score),
        best_span=span,
    )
    hint = f'[{best_number}] says: "{span}"' if best_score >= threshold else ""
    if not sentence.citations:
        if best_score >= threshold:
            return _finding(
                base,
                "uncited",
                f"sentence {number} cites nothing; cite the passage that supports it: " + hint,
            )
        return _finding(
            base,
            "unsupported",
            f"sentence {number} is supported by no passage; remove it"
            + (f' (the closest, [{best_number}], says: "{span}")' if span else ""),
        )
    if cited and cited_score >= threshold and not invalid:
        return base
    marks = "".join(f"[{n}]" for n in sentence.citations)
    if invalid and not cited:
        return _finding(
            base,
            "bad_citation",
            f"sentence {number} cites {marks}, but there are only {len(row)} "
            f"passages" + (f"; {hint}" if hint else "; remove it"),
        )
    if best_score >= threshold:
        return _finding(
            base,
            "bad_citation",
            f"sentence {number} cites {marks}, but that passage does not support it; {hint}",
        )
    return _finding(
        base,
        "unsupported",
        f"sentence {number} is not supported by {marks} or any other passage; "
        f'remove it or say only what a passage says (closest: [{best_number}] "{span}")',
    )


def _finding(base: SentenceVerdict, verdict: SentenceVerdictKind, feedback: str) -> SentenceVerdict:
    return base.model_copy(update={"verdict": verdict, "feedback": feedback})


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SPAN_CHARS else text[: SPAN_CHARS - 1].rstrip() + "\u2026"


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, float(value))), 4)
