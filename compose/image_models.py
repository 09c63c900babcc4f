"""Models of the registry/agents image, prepared at build time (compose/Dockerfile).

``export`` runs in the builder stage, in a venv with the exporter (torch, transformers, onnx):
it copies the packaged embedding model to ``SCRIPTORIUM_MODEL_DIR`` (its package requires
torch, so the runtime venv does not install it) and writes the model's ONNX export (fp32 and
int8, one folder) into the model cache. ``scriptorium critic train`` then trains the
grounding model next to it.

``adopt`` runs in the runtime stage, in the venv without torch. An export's folder name and
manifest carry a fingerprint that includes the exporting libraries' versions (torch,
transformers); without them installed the runtime computes another fingerprint and would try
to export again, which it cannot. ``adopt`` checks that the export was made from the same
model files by the same recipe for the same onnxruntime, moves it where the runtime looks and
records the runtime's fingerprint. Then it loads both embedders and the grounding model
exactly as the agents do, so an image that cannot serve fails to build.
"""

from __future__ import annotations

import json
import shutil
import sys

from agents.common.embedding_model import MANIFEST, ModelInfo, default_model_dir
from agents.common.grounding.grounder import Grounder
from agents.common.onnx_export import onnx_dir_for
from agents.common.settings import EmbeddingSettings

#: Fingerprint fields the export depends on whatever exported it.
SAME = ("source_sha256", "recipe", "opset", "onnxruntime")


def export() -> None:
    settings = EmbeddingSettings()
    if settings.model_dir is not None and not settings.model_dir.exists():
        shutil.copytree(default_model_dir(), settings.model_dir)
    for backend in ("onnx-int8", "onnx"):  # one folder holds both
        embedder = settings.load_embedder(backend)
        print(f"{backend}: {embedder.name} ready")


def adopt() -> None:
    settings = EmbeddingSettings()
    cache = settings.resolved_model_cache_dir
    model_dir = settings.model_dir or default_model_dir()
    target, fingerprint = onnx_dir_for(model_dir, cache)
    name = ModelInfo.read(model_dir).name
    exports = [
        path for path in cache.glob(f"{name}-*") if path.is_dir() and (path / MANIFEST).is_file()
    ]
    if len(exports) != 1:
        sys.exit(f"expected one ONNX export of {name} in {cache}, found {exports}")
    (source,) = exports
    manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    built = manifest["fingerprint"]
    differ = {k: (built.get(k), fingerprint[k]) for k in SAME if built.get(k) != fingerprint[k]}
    if differ:
        sys.exit(f"the export in {source} does not fit this environment: {differ}")
    manifest["fingerprint"] = fingerprint
    manifest["exported_with"] = {key: built.get(key) for key in ("torch", "transformers")}
    (source / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if source != target:
        source.rename(target)
    print(f"adopted {source.name} as {target.name}")
    for backend in ("onnx-int8", "onnx"):
        vector = settings.load_embedder(backend).embed_query("does the image serve?")
        print(f"{backend}: {vector.shape[0]}-d vectors")
    grounder = Grounder.load(settings)
    print(f"grounding model ready (threshold {grounder.threshold:.3f})")


if __name__ == "__main__":
    commands = {"export": export, "adopt": adopt}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(commands)}}}")
    commands[sys.argv[1]]()
