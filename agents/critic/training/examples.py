"""The labelled set: (claim, passage, question) examples generated per split, seeded."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.common.grounding.text import TermStats, analyse
from agents.critic.training.corpus import Document
from agents.critic.training.errors import NEGATIVE_KINDS, Planter
from agents.critic.training.rewrites import Editor, Embed, Thesaurus
from agents.critic.training.wording import find_names

POSITIVES_PER_DOCUMENT = 3
NEGATIVES_PER_DOCUMENT = 3


@dataclass(frozen=True)
class Example:
    """A labelled (claim, passage, question) triple and how it was made."""

    claim: str
    passage: str
    question: str
    supported: bool
    kind: str  # one of POSITIVE_KINDS or NEGATIVE_KINDS
    document: str  # key of the passage's document


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
    editor = Editor(rng, Thesaurus.of(documents, embed))
    planter = Planter(rng, stats)
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
                example = _negative(kind, index, documents, nearest, embed, editor, planter)
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
    planter: Planter,
) -> Example | None:
    """A planted error of ``kind`` about ``documents[index]``, or None where it does not apply."""
    rng = editor.rng
    doc = documents[index]
    neighbour = documents[nearest[index]]
    random_other = documents[rng.choice([i for i in range(len(documents)) if i != index])]
    pool = doc.sentences
    if kind == "swapped_number":
        pool = tuple(s for s in pool if re.search(r"\d", s))
    elif kind == "swapped_entity":
        pool = tuple(s for s in pool if find_names(s))
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
        claim = _corrupt(kind, edited, doc, neighbour, random_other, planter)
        if claim is None and edited != sentence:
            claim = _corrupt(kind, sentence, doc, neighbour, random_other, planter)
    if claim is None or analyse(claim) == analyse(passage.text):
        return None
    return Example(claim, passage.text, question, False, kind, passage.key)


def _corrupt(
    kind: str,
    claim: str,
    doc: Document,
    neighbour: Document,
    random_other: Document,
    planter: Planter,
) -> str | None:
    """``claim`` (about ``doc``) with an error of ``kind`` planted, donors from the others."""
    if kind == "swapped_number":
        return planter.swap_number(claim, doc.text)
    if kind == "swapped_entity":
        source = planter.rng.choice((neighbour, random_other))
        return planter.swap_entity(claim, doc.text, source.text)
    if kind == "swapped_term":
        source = planter.rng.choice((neighbour, random_other))
        return planter.swap_term(claim, doc.text, source.text)
    if kind == "negated":
        return planter.negate(claim)
    if kind == "extra_clause":
        donors = [*random_other.sentences, *neighbour.sentences]
        for donor in planter.rng.sample(donors, min(4, len(donors))):
            extended = planter.add_clause(claim, donor)
            if extended is not None:
                return extended
        return None
    raise ValueError(f"unknown negative kind {kind!r}")


def digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples, to compare generated sets."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.claim, e.passage, e.question, e.supported, e.kind]).encode())
    return h.hexdigest()
