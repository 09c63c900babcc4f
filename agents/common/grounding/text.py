"""Text analysis for grounding: tokens, crude lemmas and stems, numbers, names, negations.

:func:`analyse` reads a text once (cached) into what the features compare; :class:`TermStats`
holds the document frequencies of a reference corpus, for IDF weights and "rare" words.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from protocol.text import parse_citations, split_sentences

RARE = 0.01  # a word in at most 1% of the reference documents is rare


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` (for writing word lists)."""
    return frozenset(text.split())


# Function words; also openers an answer adds ("According to ..."), which carry no claim.
STOPWORDS = word_set(
    """
    a about above across after afterwards again against all almost along already also although
    always am among amongst an and another any anyone anything anywhere are around as at be
    became because become becomes been before being below beside besides between both but by
    can could did do does doing done down during each either else elsewhere enough etc even
    ever every for from further had has have having he hence her here hers herself him himself
    his how however i if in into is it its itself just last later least less let like made
    make many may me meanwhile might mine more moreover most mostly much must my myself namely
    neither no nobody none nor not nothing now nowhere of off often on once one only onto or
    other others otherwise our ours ourselves out over own per perhaps please rather same
    several she should since so some somehow someone something sometime sometimes somewhere
    still such than that the their theirs them themselves then thence there thereafter thereby
    therefore therein these they this those though through throughout thus to together too
    toward towards under until up upon us very via was we well were what whatever when whence
    whenever where whereas whereby wherein whether which while whither who whoever whole whom
    whose why will with within without would yet you your yours yourself yourselves
    according accordingly document documents passage passages source sources text states
    stated notably overall briefly summary indeed said says based
    roughly approximately nearly estimated
    """
)
NEGATIONS = word_set("not no never none nobody nothing neither nor nowhere cannot without")
_ORDERED_NUMBERS = (
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
)
_TENS = "thirty forty fifty sixty seventy eighty ninety"
NUMBER_WORDS = {w: str(i + 2) for i, w in enumerate(_ORDERED_NUMBERS.split(" "))} | {
    w: str(10 * (i + 3)) for i, w in enumerate(_TENS.split(" "))
}

# Unit abbreviations and spellings -> one form.
UNITS = {
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometres"), "kilometre"),
    **dict.fromkeys(("m", "meter", "meters", "metres"), "metre"),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetres"), "centimetre"),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetres"), "millimetre"),
    **dict.fromkeys(("mi", "miles"), "mile"),
    **dict.fromkeys(("ft", "feet"), "foot"),
    **dict.fromkeys(("kg", "kilos", "kilogramme", "kilogrammes", "kilograms"), "kilogram"),
    **dict.fromkeys(("lb", "lbs", "pounds"), "pound"),
    **dict.fromkeys(("sq",), "square"),
    **dict.fromkeys(("pct", "percentage"), "percent"),
    **dict.fromkeys(("yr", "yrs"), "year"),
}
_PLURAL_LOOKALIKES = word_set("species series news physics mathematics politics economics")
#: A number ("1,230", "3.5") or a word (with apostrophes and hyphens).
TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_][\w'\u2019\-]*")


def lemma(word: str) -> str:
    """Crude lemma: lower case, no possessive, no plural ``s``."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.strip("'-")
    if w in _PLURAL_LOOKALIKES:
        return w
    if w in UNITS:
        return UNITS[w]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def normalise_number(token: str) -> str:
    """``1,000`` -> ``1000``; ``3.50`` -> ``3.5``; number words -> digits."""
    lower = token.lower()
    if lower in NUMBER_WORDS:
        return NUMBER_WORDS[lower]
    plain = token.replace(",", "")
    if "." in plain:
        plain = plain.rstrip("0").rstrip(".")
    return plain.lstrip("0") or "0"


def is_number(token: str) -> bool:
    """A digit token or a number word (two .. ninety)."""
    return token[0].isdigit() or token.lower() in NUMBER_WORDS


@dataclass(frozen=True)
class Analysis:
    """What the features need to know about one text."""

    tokens: tuple[str, ...]  # surface tokens
    content: tuple[str, ...]  # content-word lemmas, first occurrence order, no duplicates
    lemmas: frozenset[str]  # lemmas of every word token
    numbers: frozenset[str]  # normalised numbers
    entities: tuple[str, ...]  # lemmas of capitalised non-function words after the first
    lead: str | None  # lemma of a capitalised first word (a name, or just sentence case)
    stems: frozenset[str]  # crude stems of every lemma
    words: tuple[tuple[str, str], ...]  # (content lemma, its lower-case surface form)
    negations: int
    bigrams: frozenset[tuple[str, str]]

    def has(self, term: str) -> bool:
        """``term`` (a lemma) is among this text's lemmas or stems."""
        return term in self.lemmas or stem(term) in self.stems


@lru_cache(maxsize=32768)
def analyse(text: str) -> Analysis:
    """Tokens, content lemmas, numbers, names and negations of ``text`` (cached)."""
    tokens = tuple(TOKEN.findall(text))
    content: dict[str, str] = {}
    entities: dict[str, None] = {}
    lemmas: set[str] = set()
    numbers: set[str] = set()
    negations = 0
    lead: str | None = None
    lower = [t.lower() for t in tokens]
    for position, (token, low) in enumerate(zip(tokens, lower, strict=True)):
        if low in NEGATIONS or low.endswith(("n't", "n\u2019t")):
            negations += 1
        if is_number(token):
            numbers.add(normalise_number(token))
            continue
        lem = lemma(token)
        lemmas.add(lem)
        if low in STOPWORDS or lem in STOPWORDS or len(lem) < 2:
            continue
        if lem not in content:
            content[lem] = low
        if token[0].isupper():
            if position == 0:
                lead = lem
            else:
                entities[lem] = None
    bigrams = frozenset(itertools.pairwise(lower))
    return Analysis(
        tokens=tokens,
        content=tuple(content),
        lemmas=frozenset(lemmas),
        numbers=frozenset(numbers),
        entities=tuple(entities),
        lead=lead,
        stems=frozenset(stem(w) for w in lemmas),
        words=tuple(content.items()),
        negations=negations,
        bigrams=bigrams,
    )


@lru_cache(maxsize=65536)
def stem(term: str) -> str:
    """A cruder form of a lemma for matching: ``moved``/``move``/``moving`` -> ``mov``."""
    for suffix in ("ing", "ed", "es", "e"):
        if term.endswith(suffix) and len(term) - len(suffix) >= 3:
            term = term[: -len(suffix)]
            if len(term) > 3 and term[-1] == term[-2] and term[-1] not in "aeiousl":
                term = term[:-1]  # "stopped" -> "stopp" -> "stop"
            break
    return term


def present(term: str, lemmas: frozenset[str]) -> bool:
    """``term`` among ``lemmas``: same lemma, same crude stem, or (long words) a shared prefix."""
    if term in lemmas:
        return True
    if term[0].isdigit():
        return False
    root = stem(term)
    if len(term) < 6:
        return any(stem(w) == root for w in lemmas)
    prefix = term[: max(5, len(term) - 3)]
    return any(w.startswith(prefix) or stem(w) == root for w in lemmas)


@dataclass(frozen=True)
class TermStats:
    """Document frequencies of lemmas in a reference corpus, for IDF weights."""

    documents: int
    df: Mapping[str, int]

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, min_df: int = 2) -> TermStats:
        """Count in how many of ``texts`` each lemma occurs (rarer than ``min_df``: dropped)."""
        counts: dict[str, int] = {}
        n = 0
        for text in texts:
            n += 1
            a = analyse(text)
            for lem in a.lemmas:
                counts[lem] = counts.get(lem, 0) + 1
        return cls(n, {k: v for k, v in sorted(counts.items()) if v >= min_df})

    def idf(self, term: str) -> float:
        """Smoothed inverse document frequency; unseen terms get the maximum."""
        return math.log((self.documents + 1) / (self.df.get(term, 0) + 1)) + 1.0

    @property
    def max_idf(self) -> float:
        """IDF of an unseen term."""
        return self.idf("\0")

    def ratio(self, term: str) -> float:
        """Fraction of reference documents holding ``term``."""
        return self.df.get(term, 0) / max(1, self.documents)

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps({"documents": self.documents, "df": dict(self.df)}), "utf-8")

    @classmethod
    def load(cls, path: Path) -> TermStats:
        """Read what :meth:`save` wrote."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(int(data["documents"]), {str(k): int(v) for k, v in data["df"].items()})


def passage_sentences(passage: str) -> list[str]:
    """A passage's sentences (the whole passage if it has none)."""
    return split_sentences(passage) or [passage.strip()]


def claim_text(sentence: str) -> str:
    """A sentence without its ``[n]`` citation markers."""
    return parse_citations(sentence).text or sentence.strip()


def content_words(text: Analysis) -> list[str]:
    """Surface forms of a text's content words."""
    return [w for _, w in text.words]
