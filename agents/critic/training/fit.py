"""Fitting the grounding forest and measuring it: the threshold on validation, figures on test.

Beside the forest's own figures: per-kind recall and false rejects, single-feature baselines
(:data:`~agents.critic.training.detection.BASELINES`), feature importances, and the
hand-written check (:mod:`agents.critic.training.handwritten`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.common.grounding.features import FEATURES
from agents.critic.training.detection import (
    BASELINES,
    Bools,
    Floats,
    best_threshold,
    detection_metrics,
    metrics_by_kind,
    roc_auc,
)
from agents.critic.training.handwritten import evaluate_handwritten

FOREST_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "min_samples_leaf": 2,
    "max_features": "sqrt",
    "n_jobs": 2,
}


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` found; each field is a section of the model's manifest."""

    threshold: float
    metrics: dict[str, float]
    validation: dict[str, float]
    baselines: dict[str, dict[str, float]]
    importances: dict[str, float]
    permutation: dict[str, float]


def fit_forest(x: Floats, y: Bools, seed: int) -> Any:
    """A random forest (:data:`FOREST_PARAMS`, seeded) fitted on feature rows ``x``."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(random_state=seed, **FOREST_PARAMS)
    forest.fit(x, y.astype(int))
    return forest


def measure(
    forest: Any,
    x: Mapping[str, Floats],
    y: Mapping[str, Bools],
    test_kinds: Sequence[str],
    x_hand: Floats,
    seed: int,
) -> Measured:
    """Pick the threshold on ``validation`` (max balanced accuracy), measure on ``test``.

    ``x`` / ``y``: features and labels by split; ``test_kinds``: how each test row was made;
    ``x_hand``: features of :func:`~agents.critic.training.handwritten.handwritten_pairs`.
    """
    from sklearn.inspection import permutation_importance

    def score(split: str) -> Floats:
        return np.asarray(forest.predict_proba(x[split])[:, 1], dtype=np.float64)

    threshold = best_threshold(score("validation"), y["validation"])
    metrics = metrics_by_kind(score("test"), y["test"], test_kinds, threshold)
    metrics["roc_auc"] = roc_auc(score("test"), y["test"])
    validation = detection_metrics(score("validation"), y["validation"], threshold)
    baselines: dict[str, dict[str, float]] = {}
    for name, column in BASELINES.items():
        t = best_threshold(column(x["validation"]), y["validation"])
        result = metrics_by_kind(column(x["test"]), y["test"], test_kinds, t)
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
    hand_scores = np.asarray(forest.predict_proba(x_hand)[:, 1], dtype=np.float64)
    for key, value in evaluate_handwritten(hand_scores, threshold).items():
        metrics[f"handwritten.{key}"] = value
    for name, column in BASELINES.items():
        hand = evaluate_handwritten(column(x_hand), baselines[name]["threshold"])
        baselines[name].update({f"handwritten.{k}": v for k, v in hand.items()})
        for key in ("f1", "false_reject_rate", "balanced_accuracy"):
            metrics[f"baseline.{name}.handwritten.{key}"] = hand[key]
    return Measured(threshold, metrics, validation, baselines, importances, permutation)
