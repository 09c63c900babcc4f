"""From model output to a cited draft: citations checked and repaired by grounding.

What the model emits is never shipped as-is. Each sentence's ``[n]`` markers are parsed;
numbers outside the passages are dropped; a citation is kept only when the grounding model
says that passage supports the sentence. A sentence without a supporting citation gets one
attached post hoc (the passage that supports it best, when the support clears the
threshold); a sentence nothing supports is removed when supported sentences remain, and
marked unsupported when none do (the critic then asks for a revision).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agents.common.grounding.grounder import Support
from protocol.payloads import DraftSentence
from protocol.text import CitedSentence, parse_answer, render_answer

MAX_SENTENCES = 5
_ABSTAIN = re.compile(
    r"\b(documents?|passages?|context|text)s? (do|does|did) not (say|mention|contain|state|"
    r"provide|include)|\bno (information|mention)\b|\bnot (mentioned|stated) in\b",
    re.IGNORECASE,
)
SupportFn = Callable[[Sequence[str]], list[list[Support]]]


@dataclass(frozen=True)
class Grounded:
    """Sentences with checked citations, and whether the model declined to answer."""

    sentences: list[DraftSentence]
    abstained: bool


def parse_output(text: str, *, structured: bool) -> list[CitedSentence]:
    """The model's sentences with their citations (free text, or the structured JSON form)."""
    if structured:
        try:
            data = json.loads(text)
            items = data["sentences"]
            return [
                CitedSentence(
                    " ".join(str(item["text"]).split()),
                    tuple(int(n) for n in item.get("citations", [])),
                )
                for item in items
                if str(item.get("text", "")).strip()
            ]
        except (ValueError, KeyError, TypeError):
            pass  # malformed JSON: read it as prose
    return parse_answer(text)


def is_abstention(text: str) -> bool:
    """Whether the model said the passages do not hold the answer."""
    return bool(_ABSTAIN.search(text))


def ground(
    cited: Sequence[CitedSentence],
    passages: int,
    support: SupportFn,
    threshold: float,
) -> Grounded:
    """Check and repair every sentence's citations against ``passages`` passages."""
    unique = _dedupe(cited)[:MAX_SENTENCES]
    claims = [s for s in unique if not is_abstention(s.text)]
    if not claims:
        return Grounded([], abstained=bool(unique))
    scores = support([s.text for s in claims])
    sentences = [_check(s, row, passages, threshold) for s, row in zip(claims, scores, strict=True)]
    if any(not s.unsupported for s in sentences):
        sentences = [s for s in sentences if not s.unsupported]
    return Grounded(sentences, abstained=False)


def _check(
    sentence: CitedSentence, row: list[Support], passages: int, threshold: float
) -> DraftSentence:
    in_range = [n for n in sentence.citations if 1 <= n <= passages]
    kept = [n for n in in_range if row[n - 1].score >= threshold]
    if kept:
        best = max(row[n - 1].score for n in kept)
        return DraftSentence(text=sentence.text, citations=kept, origin="model", support=best)
    best_support = max(row, key=lambda s: s.score)
    if best_support.score >= threshold:
        return DraftSentence(
            text=sentence.text,
            citations=[best_support.passage + 1],
            origin="attached",
            support=best_support.score,
        )
    return DraftSentence(
        text=sentence.text, citations=[], support=best_support.score, unsupported=True
    )


def _dedupe(sentences: Sequence[CitedSentence]) -> list[CitedSentence]:
    seen: set[str] = set()
    unique = []
    for sentence in sentences:
        key = re.sub(r"\W+", " ", sentence.text.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            unique.append(sentence)
    return unique


def render(sentences: Sequence[DraftSentence]) -> str:
    """The draft's text with ``[n]`` markers and open marks on unsupported sentences."""
    return render_answer([(s.text, s.citations, s.unsupported) for s in sentences])
