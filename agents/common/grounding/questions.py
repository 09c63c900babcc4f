"""What a question asks: its terms, the ones that matter, and the kind of answer it wants."""

from __future__ import annotations

import re

from agents.common.grounding.text import (
    STOPWORDS,
    TOKEN,
    TermStats,
    analyse,
    lemma,
    passage_sentences,
    word_set,
)

# Words a question is made of that say nothing about its subject.
QUESTION_WORDS = word_set(
    """
    what which who whom whose when where why how many much year years date name names named
    called call known know tell describe explain list give kind type sort mean meaning role
    happen happened happens main some any please define definition information info example
    examples thing things way ways find show
    """
)
MONTHS = word_set(
    "january february march april may june july august september october november december"
)
_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")


def question_terms(question: str) -> tuple[str, ...]:
    """The question's content lemmas and numbers, without generic question words."""
    a = analyse(question)
    terms = [t for t in a.content if t not in QUESTION_WORDS]
    return tuple(dict.fromkeys([*terms, *sorted(a.numbers)]))


_ANSWER_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "number",
        re.compile(
            r"\bhow (many|much|long|old|far|tall|high|big|large|deep|wide|heavy|fast)\b"
            r"|\bwhat (percentage|percent|number|proportion|amount|size|population)\b"
            r"|\bpopulation of\b",
            re.I,
        ),
    ),
    (
        "date",
        re.compile(
            r"\bwhen\b|\b(what|which|in what|in which) (year|date|decade|century|month|day)\b",
            re.I,
        ),
    ),
    ("person", re.compile(r"\b(who|whom|whose)\b", re.I)),
    (
        "place",
        re.compile(
            r"\bwhere\b|\b(what|which|in what|in which) (country|city|town|state|region|"
            r"province|continent|place|county|island|location)\b",
            re.I,
        ),
    ),
)


def answer_type(question: str) -> str | None:
    """What kind of answer ``question`` wants: number, date, person, place, or None."""
    for kind, pattern in _ANSWER_TYPES:
        if pattern.search(question):
            return kind
    return None


def holds_answer_type(text: str, kind: str | None) -> bool:
    """Whether ``text`` holds something of ``kind`` (a number, a date, a name)."""
    if kind is None:
        return True
    a = analyse(text)
    if kind == "number":
        return bool(a.numbers)
    if kind == "date":
        return any(t.isdigit() and _YEAR.match(t) for t in a.tokens) or any(
            t.lower() in MONTHS or t.lower() in ("century", "centuries") for t in a.tokens
        )
    # person / place: a capitalised name that is not just the first word of a sentence.
    return any(_has_inner_name(s) for s in passage_sentences(text))


def _has_inner_name(sentence: str) -> bool:
    tokens = TOKEN.findall(sentence)
    return any(
        t[0].isupper() and t.lower() not in STOPWORDS and not t[0].isdigit() for t in tokens[1:]
    )


_HOW = re.compile(r"\bhow (\w+)", re.I)


def question_names(question: str) -> set[str]:
    """Lemmas of the question's capitalised words after its first (the names it asks about)."""
    return {lemma(t) for t in analyse(question).tokens[1:] if t[0].isupper()}


def term_weights(question: str, stats: TermStats) -> dict[str, float]:
    """The question's terms, without "how *tall*" words, in order, weighted by IDF (names
    and numbers doubled)."""
    names = question_names(question)
    kind_words = {lemma(m.group(1)) for m in _HOW.finditer(question)}
    return {
        t: stats.idf(t) * (2.0 if t in names or t[0].isdigit() else 1.0)
        for t in question_terms(question)
        if t not in kind_words
    }


def important_terms(question: str, stats: TermStats, *, common: float = 0.12) -> list[str]:
    """Question terms that matter, most important first.

    Names (capitalised) and numbers always matter; other content words matter unless they
    are common (in more than ``common`` of the reference documents) or only say what kind
    of answer is wanted ("how *tall*"). Weight: :func:`term_weights`.
    """
    names = question_names(question)
    weights = term_weights(question, stats)
    terms = list(weights)
    keep = [t for t in terms if t in names or t[0].isdigit() or stats.ratio(t) <= common]
    return sorted(keep, key=lambda t: (-weights[t], terms.index(t)))
