"""How well scores detect unsupported claims: metrics, the threshold, baselines."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from agents.common.grounding.features import FEATURES
from agents.critic.training.errors import NEGATIVE_KINDS
from agents.critic.training.rewrites import POSITIVE_KINDS

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


def metrics_by_kind(
    scores: Floats, supported: Bools, kinds: Sequence[str], threshold: float
) -> dict[str, float]:
    """:func:`detection_metrics`, with the recall of each planted error kind and the
    false-reject rate of each edit kind (``kinds``: how each row was made)."""
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
