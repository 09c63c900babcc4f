"""The named features of a (claim, passage, question) pair that the grounding forest reads.

Sentence-level cosine with the shared MiniLM embedder; content-word, number and name overlap;
how close the claim's missing words come to a passage word (the same embedder, word by word);
negation mismatch; question-term coverage. :class:`Featurizer` computes them for many pairs
with one embedding call.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agents.common.embedding import Embedder, Vectors
from agents.common.grounding.questions import question_terms
from agents.common.grounding.text import (
    RARE,
    Analysis,
    TermStats,
    analyse,
    content_words,
    lemma,
    passage_sentences,
    present,
)
from agents.common.grounding.vector_cache import VectorCache

RARE_LEAD = 0.005  # a capitalised first word this rare counts as a name

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


@dataclass
class PairFeatures:
    """Features of one (claim, passage) pair and the passage sentence that matches best."""

    values: dict[str, float]
    span: str


def unmatched_words(claim: Analysis, passage: Analysis) -> list[str]:
    """Surface forms of the claim's content words (not names) that the passage lacks."""
    names = set(claim.entities) | {claim.lead}
    return [w for t, w in claim.words if t not in names and not passage.has(t)]


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
            sum(present(t, p.lemmas | p.numbers) for t in terms) / len(terms) if terms else 1.0
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
