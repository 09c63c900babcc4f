"""The grounder: the trained forest's support scores, question coverage, extractive picks.

Everything here is synchronous and CPU-bound: call it from a worker thread. A :class:`Grounder`
is safe to share between threads (one lock guards its embedder and embedding cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agents.common.embedding import Embedder
from agents.common.grounding.features import Featurizer, PairFeatures, matrix
from agents.common.grounding.model import (
    TERMS_FILE,
    TRAIN_HINT,
    GroundingModelMissing,
    check_model,
    load_forest,
    model_dir,
)
from agents.common.grounding.questions import (
    answer_type,
    holds_answer_type,
    important_terms,
    question_names,
    term_weights,
)
from agents.common.grounding.text import (
    TermStats,
    analyse,
    claim_text,
    content_words,
    passage_sentences,
    present,
)

if TYPE_CHECKING:
    from agents.common.settings import EmbeddingSettings

#: How much an extractive pick pays for resembling an earlier pick (cosine x this).
MMR_PENALTY = 0.3


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

    @classmethod
    def load(cls, settings: EmbeddingSettings) -> Grounder:
        """The configured embedder and the trained forest; raises GroundingModelMissing."""
        path = model_dir(settings.resolved_model_cache_dir)
        manifest = check_model(path)
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
        manifest = manifest or check_model(path)
        trained_for = manifest.get("embedder", {}).get("name")
        if trained_for != embedder.name:
            raise GroundingModelMissing(
                f"the grounding model at {path} was trained for the embedder {trained_for!r}, "
                f"not {embedder.name!r}: {TRAIN_HINT}"
            )
        return cls(
            embedder,
            load_forest(path),
            threshold=float(manifest["threshold"]),
            stats=TermStats.load(path / TERMS_FILE),
            manifest=manifest,
        )

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
        missing = [t for t in terms if not present(t, everything)]
        names = question_names(question)
        named = [t for t in terms if t in names or t[0].isdigit()]
        others = [t for t in terms if t not in named]
        missing_named = [t for t in missing if t in named]
        missing_others = [t for t in missing if t not in named]
        relevant = [
            p
            for p, pool in zip(passages, pools, strict=True)
            if any(present(t, pool) for t in terms)
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
        if any(present(t, pool) for t in terms):
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
        weights = term_weights(question, self.stats)
        total = sum(weights.values())

        def share(text: str) -> float:
            a = analyse(text)
            pool = a.lemmas | a.numbers
            return sum(w for t, w in weights.items() if present(t, pool)) / total if total else 0

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
