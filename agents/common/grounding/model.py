"""The trained grounding model on disk: where it lives, its manifest, and loading its forest.

``scriptorium critic train`` (:mod:`agents.critic.training`) writes it under
``<model cache>/critic/grounding/``; :func:`check_model` says whether it can be used here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.common import prepared
from agents.common.grounding.features import FEATURES

MODEL_DIR = Path("critic") / "grounding"
MANIFEST = "manifest.json"
FOREST_FILE = "forest.joblib"
TERMS_FILE = "terms.json"
TRAIN_HINT = "run `scriptorium critic train` (or `make model`)"


class GroundingModelMissing(RuntimeError):
    """No usable trained grounding model in the model cache; the message says what to run."""


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


def check_model(path: Path) -> dict[str, Any]:
    """The manifest of a model usable here; raises GroundingModelMissing saying why not."""
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


def load_forest(path: Path) -> Any:
    """The random forest saved in the model folder ``path``, set to score on one thread."""
    try:
        import joblib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the grounding model needs scikit-learn (and joblib): install the `retrieval` "
            "extra (`pip install -e '.[retrieval]'`, part of `make setup`)"
        ) from exc
    forest = joblib.load(path / FOREST_FILE)
    if hasattr(forest, "n_jobs"):
        forest.n_jobs = 1  # small batches: threads cost more than they save
    return forest
