"""Saving the trained grounding model: forest, term statistics and manifest, moved in at once.

The folder is built aside and renamed into place by :func:`agents.common.prepared.prepare_folder`
(the same as the LLM and the ONNX export); its manifest lists each file with its size, which
:func:`agents.common.grounding.model.model_is_intact` checks on every load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.common import prepared
from agents.common.grounding.model import FOREST_FILE, MANIFEST, TERMS_FILE
from agents.common.grounding.text import TermStats


def save_model(target: Path, forest: Any, stats: TermStats, manifest: dict[str, Any]) -> None:
    """Write the model into ``target`` atomically; ``manifest`` gains its ``files`` table."""
    import joblib

    def build(folder: Path, scratch: Path) -> dict[str, Any]:
        joblib.dump(forest, folder / FOREST_FILE, compress=3)
        stats.save(folder / TERMS_FILE)
        return manifest

    prepared.prepare_folder(target, build, manifest=MANIFEST, hashed=False)
