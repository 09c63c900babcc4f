"""Grounding: does a passage support a sentence, and do the passages hold what a question asks?

The critic and the writer share this module. For a sentence (a claim) and a passage it computes
named features (:data:`FEATURES`) — sentence-level cosine with the shared MiniLM embedder;
content-word, number and name overlap; how close the claim's missing words come to a passage
word (the same embedder, word by word); negation mismatch; question-term coverage — and a
scikit-learn random forest turns them into ``P(passage supports sentence)``. The forest, its
decision threshold and the term statistics it was trained with come from ``scriptorium critic
train`` (see ``agents/critic/training.py`` and ``docs/critic.md``) and live in the model
cache, under ``<model cache>/critic/grounding/``.

Everything here is synchronous and CPU-bound: call it from a worker thread. A :class:`Grounder`
is safe to share between threads (one lock guards its embedder and embedding cache).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from agents.common import prepared
from agents.common.embedding import Embedder, Vectors
from protocol.text import parse_citations, split_sentences

if TYPE_CHECKING:
    from agents.common.settings import EmbeddingSettings

MODEL_DIR = Path("critic") / "grounding"
MANIFEST = "manifest.json"
FOREST_FILE = "forest.joblib"
TERMS_FILE = "terms.json"
RARE = 0.01  # a word in at most 1% of the reference documents is rare
RARE_LEAD = 0.005  # a capitalised first word this rare counts as a name
TRAIN_HINT = "run `scriptorium critic train` (or `make model`)"

FEATURES: tuple[str, ...] = (
    "cos_best_sentence",  # max cosine, claim vs each passage sentence
    "cos_passage",  # cosine, claim vs the whole passage
    "overlap_content",  # fraction of the claim's content words found in the passage
    "overlap_content_idf",  # the same, each word weighted by its IDF
    "overlap_best_sentence",  # max over passage sentences of the content-word fraction
    "missing_content",  # count of claim content words absent from the passage
    "missing_rare",  # of those, words in at most 1% of the reference documents
    "missing_similarity_min",  # missing non-name words: worst best-cosine to a passage word
    "missing_similarity_mean",  # ... and the mean (1 when nothing is missing)
    "unexplained_idf",  # max over those words of IDF (0..1) x (1 - best cosine): rare and new
    "max_missing_idf",  # IDF (0..1) of the rarest claim content word absent from the passage
    "bigram_overlap",  # fraction of the claim's word bigrams found in the passage
    "number_overlap",  # fraction of the claim's numbers found in the passage (1 if none)
    "number_missing",  # count of claim numbers absent from the passage
    "entity_overlap",  # fraction of the claim's capitalised names found in the passage
    "entity_missing",  # count of claim names absent from the passage
    "negation_mismatch",  # negation in exactly one of claim and best-matching span
    "negation_unmatched",  # the claim negates, the passage holds no negation at all
    "question_coverage",  # fraction of the question's terms in the passage (1 if no question)
    "claim_length",  # content words in the claim
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words; also openers an answer adds ("According to ..."), which carry no claim.
STOPWORDS = _words(
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
# Words a question is made of that say nothing about its subject.
QUESTION_WORDS = _words(
    """
    what which who whom whose when where why how many much year years date name names named
    called call known know tell describe explain list give kind type sort mean meaning role
    happen happened happens main some any please define definition information info example
    examples thing things way ways find show
    """
)
NEGATIONS = _words("not no never none nobody nothing neither nor nowhere cannot without")
_ORDERED_NUMBERS = (
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
)
_TENS = "thirty forty fifty sixty seventy eighty ninety"
NUMBER_WORDS = {w: str(i + 2) for i, w in enumerate(_ORDERED_NUMBERS.split(" "))} | {
    w: str(10 * (i + 3)) for i, w in enumerate(_TENS.split(" "))
}
MONTHS = _words(
    "january february march april may june july august september october november december"
)

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
_PLURAL_LOOKALIKES = _words("species series news physics mathematics politics economics")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_][\w'\u2019\-]*")
_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")


#: How much an extractive pick pays for resembling an earlier pick (cosine x this).
MMR_PENALTY = 0.3


class GroundingModelMissing(RuntimeError):
    """No usable trained grounding model in the model cache; the message says what to run."""


@dataclass(frozen=True)
class Support:
    """How well one passage supports one sentence."""

    passage: int  # 0-based index into the passages given
    score: float  # P(passage supports sentence), 0..1, from the forest
    span: str  # the passage sentence that matches the claim best
    features: dict[str, float]


@dataclass(frozen=True)
class CoverageReport:
    """Whether the passages hold what the question asks."""

    covered: bool
    missing_terms: list[str]  # important question terms found in no passage
    answer_type: str | None  # "number", "date", "person", "place" or None
    answer_type_found: bool


# ---------------------------------------------------------------------------------------------
# Text analysis: tokens, crude lemmas, numbers, names, negations.


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
    tokens = tuple(_TOKEN.findall(text))
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


def _present(term: str, lemmas: frozenset[str]) -> bool:
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


# ---------------------------------------------------------------------------------------------
# Embeddings with a per-text LRU cache, and the pair features.


class VectorStore(Protocol):
    """A second level behind the in-process cache (:class:`agents.common.vectors.SharedVectors`)."""

    def get_many(self, texts: Sequence[str]) -> dict[str, Vectors]: ...

    def put_many(self, vectors: Mapping[str, Vectors]) -> None: ...


class VectorCache:
    """Embeddings by text; one embedder call per lookup for every text not cached yet.

    With ``shared`` set, texts missing here are looked up there before being embedded, and
    what this process embeds is stored there for others.
    """

    def __init__(self, embedder: Embedder, size: int | None = 8192) -> None:
        self.embedder = embedder
        self.size = size
        self.shared: VectorStore | None = None
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, texts: Iterable[str]) -> dict[str, Vectors]:
        """Vectors of ``texts`` (embedding the new ones in one batch)."""
        wanted = list(dict.fromkeys(texts))
        with self._lock:
            found: dict[str, Vectors] = {}
            missing: list[str] = []
            for text in wanted:
                vector = self._vectors.get(text)
                if vector is None:
                    missing.append(text)
                else:
                    self._vectors.move_to_end(text)
                    found[text] = vector
            if missing and self.shared is not None:
                for text, row in self.shared.get_many(missing).items():
                    found[text] = row
                    self._vectors[text] = row
                missing = [t for t in missing if t not in found]
            if missing:
                computed = self.embedder.embed_documents(missing)
                fresh = dict(zip(missing, computed, strict=True))
                for text, row in fresh.items():
                    found[text] = row
                    self._vectors[text] = row
                if self.shared is not None:
                    self.shared.put_many(fresh)
                if self.size is not None:
                    while len(self._vectors) > max(self.size, len(wanted)):
                        self._vectors.popitem(last=False)
            return found

    def query(self, text: str) -> Vectors:
        """The embedding of a search query (not cached: questions rarely repeat)."""
        with self._lock:
            return self.embedder.embed_query(text)


def passage_sentences(passage: str) -> list[str]:
    """A passage's sentences (the whole passage if it has none)."""
    return split_sentences(passage) or [passage.strip()]


def claim_text(sentence: str) -> str:
    """A sentence without its ``[n]`` citation markers."""
    return parse_citations(sentence).text or sentence.strip()


def question_terms(question: str) -> tuple[str, ...]:
    """The question's content lemmas and numbers, without generic question words."""
    a = analyse(question)
    terms = [t for t in a.content if t not in QUESTION_WORDS]
    return tuple(dict.fromkeys([*terms, *sorted(a.numbers)]))


@dataclass
class PairFeatures:
    """Features of one (claim, passage) pair and the passage sentence that matches best."""

    values: dict[str, float]
    span: str


def unmatched_words(claim: Analysis, passage: Analysis) -> list[str]:
    """Surface forms of the claim's content words (not names) that the passage lacks."""
    names = set(claim.entities) | {claim.lead}
    return [w for t, w in claim.words if t not in names and not passage.has(t)]


def content_words(text: Analysis) -> list[str]:
    """Surface forms of a text's content words."""
    return [w for _, w in text.words]


def pair_features(
    claim: str,
    passage: str,
    sentences: Sequence[str],
    question: str,
    stats: TermStats,
    vectors: Mapping[str, Vectors],
) -> PairFeatures:
    """The named :data:`FEATURES` of ``claim`` against ``passage``.

    ``vectors`` holds the embeddings of the claim, the passage, its ``sentences``, and — when
    the claim has words the passage lacks — of those words and of the passage's words.
    """
    c = analyse(claim)
    p = analyse(passage)
    claim_vector = vectors[claim]
    cos_sentences = np.stack([vectors[s] for s in sentences]) @ claim_vector
    sentence_overlaps = [_fraction(c.content, analyse(s)) if c.content else 0.0 for s in sentences]
    best = int(np.argmax(cos_sentences + 0.5 * np.asarray(sentence_overlaps)))
    span = sentences[best]
    s = analyse(span)

    missing = [t for t in c.content if not p.has(t)]
    weights = {t: stats.idf(t) for t in c.content}
    total = sum(weights.values())
    missing_numbers = [n for n in c.numbers if n not in p.numbers]
    names = [*c.entities, c.lead] if c.lead and stats.ratio(c.lead) < RARE_LEAD else c.entities
    missing_entities = [e for e in names if not p.has(e)]
    bigrams = [b for b in _word_bigrams(c) if b in p.bigrams]
    n_bigrams = len(_word_bigrams(c))
    terms = question_terms(question) if question else ()
    unmatched = unmatched_words(c, p)
    similarity = _word_similarity(unmatched, content_words(p), vectors)
    unexplained = [
        stats.idf(lemma(w)) / stats.max_idf * (1.0 - float(sim))
        for w, sim in zip(unmatched, similarity, strict=True)
    ]
    values = {
        "cos_best_sentence": float(np.max(cos_sentences)),
        "cos_passage": float(vectors[passage] @ claim_vector),
        "overlap_content": 1.0 - len(missing) / len(c.content) if c.content else 0.0,
        "overlap_content_idf": (
            1.0 - sum(weights[t] for t in missing) / total if total > 0 else 0.0
        ),
        "overlap_best_sentence": max(sentence_overlaps),
        "missing_content": float(len(missing)),
        "missing_rare": float(sum(stats.ratio(t) <= RARE for t in missing)),
        "missing_similarity_min": float(similarity.min()) if similarity.size else 1.0,
        "missing_similarity_mean": float(similarity.mean()) if similarity.size else 1.0,
        "unexplained_idf": max(unexplained, default=0.0),
        "max_missing_idf": max((weights[t] for t in missing), default=0.0) / stats.max_idf,
        "bigram_overlap": len(bigrams) / n_bigrams if n_bigrams else 0.0,
        "number_overlap": 1.0 - len(missing_numbers) / len(c.numbers) if c.numbers else 1.0,
        "number_missing": float(len(missing_numbers)),
        "entity_overlap": 1.0 - len(missing_entities) / len(names) if names else 1.0,
        "entity_missing": float(len(missing_entities)),
        "negation_mismatch": float((c.negations > 0) != (s.negations > 0)),
        "negation_unmatched": float(c.negations > 0 and p.negations == 0),
        "question_coverage": (
            sum(_present(t, p.lemmas | p.numbers) for t in terms) / len(terms) if terms else 1.0
        ),
        "claim_length": float(len(c.content) + len(c.numbers)),
    }
    return PairFeatures(values, span)


def _word_similarity(
    missing: Sequence[str], available: Sequence[str], vectors: Mapping[str, Vectors]
) -> npt.NDArray[np.float32]:
    """For each missing word, its highest cosine with a passage word (empty if none missing)."""
    if not missing:
        return np.zeros(0, dtype=np.float32)
    if not available:
        return np.zeros(len(missing), dtype=np.float32)
    a = np.stack([vectors[w] for w in missing])
    b = np.stack([vectors[w] for w in available])
    best: npt.NDArray[np.float32] = (a @ b.T).max(axis=1)
    return best


def _fraction(terms: Sequence[str], text: Analysis) -> float:
    return sum(text.has(t) for t in terms) / len(terms)


def _word_bigrams(a: Analysis) -> list[tuple[str, str]]:
    lower = [t.lower() for t in a.tokens]
    return list(dict.fromkeys(itertools.pairwise(lower)))


class Featurizer:
    """Computes :data:`FEATURES` for many pairs with one embedding call."""

    def __init__(self, embedder: Embedder, stats: TermStats, cache_size: int | None = 8192):
        self.embedder = embedder
        self.stats = stats
        self.cache = VectorCache(embedder, cache_size)

    def pairs(self, pairs: Sequence[tuple[str, str, str]]) -> list[PairFeatures]:
        """Features of each ``(claim, passage, question)``; claims are used as given."""
        split = {p: passage_sentences(p) for _, p, _ in pairs}
        texts = [c for c, _, _ in pairs] + list(split)
        texts += [s for sentences in split.values() for s in sentences]
        for claim, passage, _ in pairs:
            missing = unmatched_words(analyse(claim), analyse(passage))
            if missing:
                texts += missing
                texts += content_words(analyse(passage))
        vectors = self.cache.lookup(texts)
        return [
            pair_features(claim, passage, split[passage], question, self.stats, vectors)
            for claim, passage, question in pairs
        ]


def matrix(features: Sequence[PairFeatures]) -> npt.NDArray[np.float64]:
    """Rows of feature values in :data:`FEATURES` order."""
    return np.array(
        [[f.values[name] for name in FEATURES] for f in features], dtype=np.float64
    ).reshape(len(features), len(FEATURES))


# ---------------------------------------------------------------------------------------------
# Answer types and question coverage.

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
    tokens = _TOKEN.findall(sentence)
    return any(
        t[0].isupper() and t.lower() not in STOPWORDS and not t[0].isdigit() for t in tokens[1:]
    )


_HOW = re.compile(r"\bhow (\w+)", re.I)


def important_terms(question: str, stats: TermStats, *, common: float = 0.12) -> list[str]:
    """Question terms that matter, most important first.

    Names (capitalised) and numbers always matter; other content words matter unless they
    are common (in more than ``common`` of the reference documents) or only say what kind
    of answer is wanted ("how *tall*"). Weight: IDF, doubled for names and numbers.
    """
    a = analyse(question)
    names = {lemma(t) for t in a.tokens[1:] if t[0].isupper()}
    kind_words = {lemma(m.group(1)) for m in _HOW.finditer(question)}
    terms = [t for t in question_terms(question) if t not in kind_words]
    keep = [t for t in terms if t in names or t[0].isdigit() or stats.ratio(t) <= common]

    def weight(term: str) -> float:
        return (2.0 if term in names or term[0].isdigit() else 1.0) * stats.idf(term)

    return sorted(keep, key=lambda t: (-weight(t), terms.index(t)))


# ---------------------------------------------------------------------------------------------
# The trained model.


def model_dir(cache_dir: Path) -> Path:
    """Where the trained grounding model lives under the model cache."""
    return cache_dir / MODEL_DIR


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The model folder's manifest, or None if missing or unreadable."""
    try:
        return prepared.read_manifest(path, MANIFEST)
    except (OSError, ValueError):
        return None


def model_is_intact(path: Path, manifest: Mapping[str, Any] | None = None) -> bool:
    """Every file the manifest lists is there with its recorded size."""
    manifest = manifest if manifest is not None else read_manifest(path)
    if not manifest:
        return False
    files: dict[str, int] = manifest.get("files") or {}
    return bool(files) and not prepared.check_files(path, files)


def _joblib() -> Any:
    try:
        import joblib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the grounding model needs scikit-learn (and joblib): install the `retrieval` "
            "extra (`pip install -e '.[retrieval]'`, part of `make setup`)"
        ) from exc
    return joblib


class Grounder:
    """Scores sentence-passage support with the trained forest; checks question coverage."""

    threshold: float  # decision threshold on score chosen on the validation split

    def __init__(
        self,
        embedder: Embedder,
        forest: Any,
        *,
        threshold: float,
        stats: TermStats,
        manifest: Mapping[str, Any] | None = None,
        cache_size: int = 8192,
    ) -> None:
        self.embedder = embedder
        self.forest = forest
        self.threshold = threshold
        self.stats = stats
        self.manifest = dict(manifest or {})
        self.featurizer = Featurizer(embedder, stats, cache_size)

    def _term_weights(self, question: str) -> dict[str, float]:
        """The question's terms (without "how *tall*" words) by IDF, names and numbers x2."""
        a = analyse(question)
        names = {lemma(t) for t in a.tokens[1:] if t[0].isupper()}
        kind_words = {lemma(m.group(1)) for m in _HOW.finditer(question)}
        return {
            t: self.stats.idf(t) * (2.0 if t in names or t[0].isdigit() else 1.0)
            for t in question_terms(question)
            if t not in kind_words
        }

    @classmethod
    def load(cls, settings: EmbeddingSettings) -> Grounder:
        """The configured embedder and the trained forest; raises GroundingModelMissing."""
        path = model_dir(settings.resolved_model_cache_dir)
        manifest = cls._check(path)
        backend = manifest.get("embedder", {}).get("backend")
        if backend != settings.grounding_embedder:
            raise GroundingModelMissing(
                f"the grounding model at {path} was trained on {backend!r} embeddings, not "
                f"{settings.grounding_embedder!r}: {TRAIN_HINT}"
            )
        embedder = settings.load_embedder(settings.grounding_embedder)
        return cls.from_dir(path, embedder, manifest=manifest)

    @classmethod
    def from_dir(
        cls, path: Path, embedder: Embedder, *, manifest: Mapping[str, Any] | None = None
    ) -> Grounder:
        """Load the model saved in ``path`` around an already loaded ``embedder``."""
        manifest = manifest or cls._check(path)
        trained_for = manifest.get("embedder", {}).get("name")
        if trained_for != embedder.name:
            raise GroundingModelMissing(
                f"the grounding model at {path} was trained for the embedder {trained_for!r}, "
                f"not {embedder.name!r}: {TRAIN_HINT}"
            )
        forest = _joblib().load(path / FOREST_FILE)
        if hasattr(forest, "n_jobs"):
            forest.n_jobs = 1  # small batches: threads cost more than they save
        return cls(
            embedder,
            forest,
            threshold=float(manifest["threshold"]),
            stats=TermStats.load(path / TERMS_FILE),
            manifest=manifest,
        )

    @staticmethod
    def _check(path: Path) -> dict[str, Any]:
        manifest = read_manifest(path)
        if manifest is None or not model_is_intact(path, manifest):
            raise GroundingModelMissing(f"no trained grounding model at {path}: {TRAIN_HINT}")
        if tuple(manifest.get("features", ())) != FEATURES:
            raise GroundingModelMissing(
                f"the grounding model at {path} was trained on other features: {TRAIN_HINT}"
            )
        try:
            import sklearn

            version = sklearn.__version__
        except ImportError:  # pragma: no cover - depends on the environment
            version = None
        if manifest.get("sklearn") != version:
            raise GroundingModelMissing(
                f"the grounding model at {path} was saved by scikit-learn "
                f"{manifest.get('sklearn')}, this is {version}: {TRAIN_HINT}"
            )
        return manifest

    def scores(self, features: Sequence[PairFeatures]) -> npt.NDArray[np.float64]:
        """The forest's P(supported) for each pair."""
        if not features:
            return np.zeros(0)
        proba = self.forest.predict_proba(matrix(features))
        classes = list(self.forest.classes_)
        return np.asarray(proba[:, classes.index(1)], dtype=np.float64)

    def prepare(self, passages: Sequence[str]) -> None:
        """Embed what :meth:`support` will need of ``passages`` ahead of time (for example
        while the model writes), so that checking the answer later costs little."""
        usable = [p for p in passages if p.strip()]
        texts = usable + [s for p in usable for s in passage_sentences(p)]
        texts += [w for p in usable for w in content_words(analyse(p))]
        self.featurizer.cache.lookup(texts)

    def support(
        self, sentences: Sequence[str], passages: Sequence[str], question: str = ""
    ) -> list[list[Support]]:
        """For each sentence, one Support per passage (passage order). Batched: one embedding
        call for all new texts. ``[n]`` markers in the sentences are ignored."""
        claims = [claim_text(s) for s in sentences]
        usable = [p for p in passages if p.strip()]
        pairs = [(c, p, question) for c in claims if c for p in usable]
        features = self.featurizer.pairs(pairs)
        scores = self.scores(features)
        out: list[list[Support]] = []
        k = 0
        for claim in claims:
            row: list[Support] = []
            for index, passage in enumerate(passages):
                if not claim or not passage.strip():
                    row.append(Support(index, 0.0, "", {}))
                    continue
                f = features[k]
                row.append(Support(index, float(scores[k]), f.span, dict(f.values)))
                k += 1
            out.append(row)
        return out

    def coverage(self, question: str, passages: Sequence[str]) -> CoverageReport:
        """Whether the passages hold the question's important terms and its answer type.

        Covered: every name and number of the question is in some passage, at most a third
        of its other important terms (see :func:`important_terms`) are missing (questions
        carry words passages rarely use: "longer", "spent"), and the answer type (number,
        date, person, place) is found in a passage that holds at least one important term
        (any passage when the question has none).
        """
        terms = important_terms(question, self.stats)
        pools = [analyse(p).lemmas | analyse(p).numbers for p in passages]
        everything = frozenset().union(*pools)
        missing = [t for t in terms if not _present(t, everything)]
        names = {lemma(t) for t in analyse(question).tokens[1:] if t[0].isupper()}
        named = [t for t in terms if t in names or t[0].isdigit()]
        others = [t for t in terms if t not in named]
        missing_named = [t for t in missing if t in named]
        missing_others = [t for t in missing if t not in named]
        relevant = [
            p
            for p, pool in zip(passages, pools, strict=True)
            if any(_present(t, pool) for t in terms)
        ]
        kind = answer_type(question)
        found = any(holds_answer_type(p, kind) for p in relevant or passages) if kind else True
        return CoverageReport(
            covered=not missing_named and len(missing_others) <= len(others) // 3 and found,
            missing_terms=missing,
            answer_type=kind,
            answer_type_found=found,
        )

    def addresses(self, question: str, answer: str) -> bool:
        """Whether ``answer`` is about the question: it names at least one of the question's
        important terms, or gives the kind of answer asked for (a number, a date ...)."""
        terms = important_terms(question, self.stats)
        if not terms:
            return True
        a = analyse(answer)
        pool = a.lemmas | a.numbers
        if any(_present(t, pool) for t in terms):
            return True
        kind = answer_type(question)
        return kind is not None and holds_answer_type(answer, kind)

    def extract(
        self, question: str, passages: Sequence[str], limit: int = 3
    ) -> list[tuple[int, str, float]]:
        """Best passage sentences for the question (passage index, sentence, relevance score),
        for an extractive answer.

        Relevance = 0.5 x cosine(question, sentence) + 0.2 x the share of the question's terms
        in the sentence + 0.2 x their share in the sentence's passage (IDF-weighted, names and
        numbers doubled) + 0.1 when the sentence holds the answer type (a number for "how
        many", a year for "when", ...). Identical sentences are listed once.
        """
        candidates = [
            (i, s) for i, p in enumerate(passages) if p.strip() for s in passage_sentences(p)
        ]
        if not candidates or limit <= 0:
            return []
        q = self.featurizer.cache.query(question)
        vectors = self.featurizer.cache.lookup(s for _, s in candidates)
        weights = self._term_weights(question)
        total = sum(weights.values())

        def share(text: str) -> float:
            a = analyse(text)
            pool = a.lemmas | a.numbers
            return sum(w for t, w in weights.items() if _present(t, pool)) / total if total else 0

        in_passage = {i: share(p) for i, p in enumerate(passages)}
        kind = answer_type(question)
        scored: dict[str, tuple[int, str, float]] = {}
        for index, sentence in candidates:
            score = (
                0.5 * max(0.0, float(vectors[sentence] @ q))
                + 0.2 * share(sentence)
                + 0.2 * in_passage[index]
                + (0.1 if kind and holds_answer_type(sentence, kind) else 0.0)
            )
            if sentence not in scored or scored[sentence][2] < score:
                scored[sentence] = (index, sentence, round(score, 4))
        # Maximal marginal relevance: each next pick pays for resembling one already made,
        # so the quotes cover different facts (and, for two-part questions, both parts).
        pool = sorted(scored.values(), key=lambda r: (-r[2], r[0]))
        chosen: list[tuple[int, str, float]] = []
        while pool and len(chosen) < limit:
            best = max(
                pool,
                key=lambda r: (
                    r[2]
                    - MMR_PENALTY
                    * max((float(vectors[r[1]] @ vectors[c[1]]) for c in chosen), default=0.0)
                ),
            )
            chosen.append(best)
            pool.remove(best)
        return chosen
