"""Sentences and ``[n]`` citations: the one place text is split and citations are parsed.

The writer, the critic and the CLI all read answers through these functions, so a sentence
means the same thing to each of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A citation group: [1], [1, 2], [1][2], [1-3] (ranges expand).
_CITATION = re.compile(r"\[\s*(\d{1,3}(?:\s*(?:[,;-]|\u2013)\s*\d{1,3})*)\s*\]")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets and citations)
# when whitespace and an upper-case letter, digit or quote follow.
_BOUNDARY = re.compile(
    r"(?<=[.!?])(?:[\"'\u201d\u2019)\]]*)(?:\s*"
    + _CITATION.pattern
    + r")*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])"
)
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "fig"),
        *("no", "vol", "approx", "ca", "inc", "ltd", "co", "corp", "u.s", "u.k", "mt", "ft"),
        *("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    }
)
_SPACES = re.compile(r"\s+")
UNSUPPORTED_MARK = "[unsupported]"


@dataclass(frozen=True)
class CitedSentence:
    """A sentence with its ``[n]`` markers removed and the numbers they named, in order."""

    text: str
    citations: tuple[int, ...]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences; citations stay with the sentence they follow."""
    text = _SPACES.sub(" ", text).strip()
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        candidate = text[start : match.start()].strip()
        if _ends_with_abbreviation(candidate):
            continue
        head = text[start : match.end()].strip()
        if head:
            sentences.append(head)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _ends_with_abbreviation(text: str) -> bool:
    last = text.rsplit(" ", 1)[-1].rstrip(".").lower()
    if len(last) == 1 and last.isalpha():  # initials: "J. R. R. Tolkien"
        return True
    return last in _ABBREVIATIONS


def parse_citations(sentence: str) -> CitedSentence:
    """The sentence without its ``[n]`` markers, and every number they cite (deduplicated)."""
    numbers: list[int] = []
    for match in _CITATION.finditer(sentence):
        for number in _expand(match.group(1)):
            if number not in numbers:
                numbers.append(number)
    bare = _CITATION.sub("", sentence.replace(UNSUPPORTED_MARK, ""))
    bare = _SPACES.sub(" ", bare).strip()
    bare = re.sub(r"\s+([.,;:!?])", r"\1", bare)
    if not any(ch.isalnum() for ch in bare):
        bare = ""
    return CitedSentence(bare, tuple(numbers))


def _expand(group: str) -> list[int]:
    numbers: list[int] = []
    for piece in re.split(r"\s*[,;]\s*", group.strip()):
        bounds = re.split(r"\s*[-\u2013]\s*", piece)
        if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            low, high = int(bounds[0]), int(bounds[1])
            if 0 < high - low <= 10:
                numbers.extend(range(low, high + 1))
                continue
        numbers.extend(int(b) for b in bounds if b.isdigit())
    return numbers


def parse_answer(text: str) -> list[CitedSentence]:
    """Split an answer into sentences and parse each one's citations.

    A citation run that stands alone (after the final period) belongs to the sentence
    before it.
    """
    result: list[CitedSentence] = []
    for sentence in split_sentences(text):
        cited = parse_citations(sentence)
        if not cited.text and result:
            previous = result[-1]
            merged = previous.citations + tuple(
                n for n in cited.citations if n not in previous.citations
            )
            result[-1] = CitedSentence(previous.text, merged)
        elif cited.text:
            result.append(cited)
    return result


def render_sentence(text: str, citations: Iterable[int], *, unsupported: bool = False) -> str:
    """A sentence with its citations as ``[n]`` markers before the final punctuation."""
    text = text.strip()
    marks = "".join(f"[{n}]" for n in citations)
    if unsupported:
        marks += UNSUPPORTED_MARK
    if not marks:
        return text
    if text and text[-1] in ".!?":
        return f"{text[:-1]} {marks}{text[-1]}"
    return f"{text} {marks}"


def render_answer(sentences: Sequence[tuple[str, Sequence[int], bool]]) -> str:
    """Sentences ``(text, citations, unsupported)`` joined into one cited answer."""
    return " ".join(render_sentence(t, c, unsupported=u) for t, c, u in sentences)
