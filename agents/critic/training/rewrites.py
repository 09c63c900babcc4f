"""Edits that keep a sentence true to its passage: the supported claims of the labelled set.

The light edits an LLM makes when it answers from a passage: a prefix, a pronoun replaced by
the subject, a generic word added, a clause or words dropped, a phrase moved, a rewording (from
a table or a :class:`Thesaurus` of embedding neighbours), a truncation, two sentences combined.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

import numpy as np

from agents.common.embedding import Vectors
from agents.common.grounding.text import NEGATIONS, STOPWORDS, stem, word_set
from agents.critic.training.corpus import Document
from agents.critic.training.wording import CUT_WORDS, articles, body, finish, plain

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

Embed = Callable[[Sequence[str]], Vectors]

PREFIXES = (
    "According to the document, ",
    "The passage states that ",
    "As the source explains, ",
    "In summary, ",
    "Notably, ",
    "Based on the passage, ",
    "We are told that ",
)
DROPPABLE = word_set(
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
_WHERE = word_set("in on at near along between within inside across")
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
_LEADING = word_set("in on at during after before by from since until with under following as for")
_IRREGULAR = word_set("known found made built held seen used led won born thought considered")
_ADJECTIVE = ("al", "ic", "ous", "ive", "ful", "ary", "ent", "ant", "able", "ible", "ern")


def _participle(word: str) -> bool:
    """A past participle ("moved", "known")."""
    return word.isalpha() and word.islower() and (word.endswith(("ed", "en")) or word in _IRREGULAR)


def _noun_like(word: str) -> bool:
    """A lower-case word that is not a function word."""
    return word.isalpha() and word.islower() and word not in STOPWORDS


def _lower_first(text: str) -> str:
    """``text`` with a function word or a leading preposition at its start lower-cased."""
    first = text.split(" ", 1)[0]
    if first.lower() in STOPWORDS or first.lower() in _LEADING:
        return text[:1].lower() + text[1:]
    return text


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
            {w for d in documents for w in (plain(t) for t in d.text.split()) if len(w) >= 4}
        )
        return cls(vocabulary, embed)

    def similar(self, word: str, rng: random.Random) -> str | None:
        """A near-synonym of ``word``, or None."""
        options = self.neighbours.get(word)
        return rng.choice(options) if options else None


class Editor:
    """Seeded sentence edits that keep a claim supported (rewordings from ``thesaurus`` too)."""

    def __init__(self, rng: random.Random, thesaurus: Thesaurus | None = None) -> None:
        self.rng = rng
        self.thesaurus = thesaurus

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
        return finish([w for i, w in enumerate(words) if i not in drop])

    def _reorder(self, sentence: str, siblings: Sequence[str]) -> str | None:
        words = body(sentence).split()
        # A leading phrase ("In 1924, ...") moves to the end.
        if len(words) > 5 and words[0].lower() in _LEADING:
            for i, w in enumerate(words[1:9], start=1):
                if w.endswith(",") and len(words) - i > 3:
                    phrase = [words[0].lower(), *words[1 : i + 1]]
                    phrase[-1] = phrase[-1].rstrip(",")
                    return finish([*words[i + 1 :], *phrase])
        # A trailing prepositional phrase moves to the front.
        for i in range(len(words) - 2, max(2, len(words) - 7), -1):
            before = words[i - 1].lower()
            if words[i].lower() in _LEADING and not before.endswith(",") and before not in _JOINS:
                head = " ".join(words[:i]).rstrip(",")
                tail = " ".join(words[i:])
                return finish([tail[:1].upper() + tail[1:] + ",", _lower_first(head)])
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
                if plain(m.group(0)):
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
        return articles(sentence)

    def _cuts(self, words: Sequence[str]) -> list[int]:
        return [
            i
            for i in range(5, len(words) - 2)
            if words[i - 1].endswith(",") or words[i].lower() in CUT_WORDS
        ]

    def _truncate(self, sentence: str, siblings: Sequence[str]) -> str | None:
        words = body(sentence).split()
        cuts = self._cuts(words)
        if not cuts:
            return None
        return finish(words[: self.rng.choice(cuts)])

    def _combine(self, sentence: str, siblings: Sequence[str]) -> str | None:
        others = [s for s in siblings if s != sentence]
        if not others:
            return None
        words = body(sentence).split()
        cuts = self._cuts(words)
        head = " ".join(words[: self.rng.choice(cuts)] if cuts else words).rstrip(",;:")
        tail = _lower_first(self.rng.choice(others))
        return finish([head + ",", "and", tail])
