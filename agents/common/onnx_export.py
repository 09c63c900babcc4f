"""The ONNX export of an embedding model: fp32, then int8 weights, once per fingerprint.

The export goes to ``<cache_dir>/<model-name>-<fingerprint>/``; the fingerprint covers the
model's files (SHA-256) and the exporting libraries' versions (torch, transformers,
onnxruntime), so a changed model or library gets a new folder. It is built aside and moved
into place by :func:`agents.common.prepared.prepare_folder`; its manifest records each file's
size, checked on every load (cheap), and the fingerprint.

Exporting needs torch, transformers and onnx (imported only here, only when exporting);
running the export needs only onnxruntime and tokenizers (:mod:`agents.common.embedding`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.common import prepared
from agents.common.embedding_model import (
    FP32_FILE,
    INT8_FILE,
    MANIFEST,
    TOKENIZER_FILE,
    WEIGHT_FILES,
    EmbeddingError,
    ModelInfo,
    Progress,
    check_model_dir,
    hide_broken_torch_extras,
)
from protocol.extras import extra, require

log = logging.getLogger(__name__)

ONNX_OPSET = 17
# Bump when the export or quantization recipe changes: it is part of the fingerprint.
EXPORT_RECIPE = 1


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def source_fingerprint(model_dir: Path) -> dict[str, str]:
    """sha256 of the model's weights, config and tokenizer, and the exporting library versions."""
    digest = hashlib.sha256()
    for name in (*WEIGHT_FILES, "config.json", TOKENIZER_FILE):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            prepared.update_from_file(digest, path)
    return {
        "source_sha256": digest.hexdigest(),
        "recipe": str(EXPORT_RECIPE),
        "opset": str(ONNX_OPSET),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "onnxruntime": _version("onnxruntime"),
    }


def onnx_dir_for(model_dir: Path, cache_dir: Path) -> tuple[Path, dict[str, str]]:
    """Where :func:`prepare_onnx` puts ``model_dir``'s export, and the fingerprint it checks."""
    info = ModelInfo.read(model_dir)
    fingerprint = source_fingerprint(model_dir)
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{info.name}-{key}", fingerprint


def _is_ready(onnx_dir: Path, fingerprint: dict[str, str], quantize: bool) -> bool:
    """Whether ``onnx_dir`` holds an export with this fingerprint and its files whole."""
    try:
        manifest = prepared.read_manifest(onnx_dir, MANIFEST)
    except (OSError, ValueError):
        return False
    files: dict[str, int] = manifest.get("files", {})
    wanted = [FP32_FILE, TOKENIZER_FILE] + ([INT8_FILE] if quantize else [])
    return (
        manifest.get("fingerprint") == fingerprint
        and all(name in files for name in wanted)
        and not prepared.check_files(onnx_dir, {name: files[name] for name in wanted})
    )


def prepare_onnx(
    model_dir: Path, cache_dir: Path, *, quantize: bool = True, progress: Progress | None = None
) -> Path:
    """Export ``model_dir`` to ONNX (and int8) under ``cache_dir`` once; return its folder.

    Does nothing when the folder's manifest matches the model's checksum and the library
    versions. The export is written to a temporary folder and renamed into place, so a crash
    never leaves a half-written model; concurrent callers may both export, one result wins.
    """
    model_dir = check_model_dir(model_dir)
    target, fingerprint = onnx_dir_for(model_dir, cache_dir)
    if _is_ready(target, fingerprint, quantize):
        log.debug("ONNX model up to date at %s", target)
        return target

    def report(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    require(
        "retrieval",
        feature="exporting the embedding model to ONNX",
        modules=("onnx", "torch", "transformers"),
    )
    started = time.perf_counter()

    def build(work: Path, scratch: Path) -> dict[str, Any]:
        report(f"exporting {model_dir} to ONNX (opset {ONNX_OPSET}); takes ~15 s, once")
        input_names = _export(model_dir, work / FP32_FILE)
        if quantize:
            report("quantizing the ONNX weights to int8 (dynamic, per channel)")
            _quantize(work / FP32_FILE, work / INT8_FILE)
        shutil.copyfile(model_dir / TOKENIZER_FILE, work / TOKENIZER_FILE)
        info = ModelInfo.read(model_dir)
        return {
            "fingerprint": fingerprint,
            "model": asdict(info),
            "source_dir": str(model_dir),
            "inputs": input_names,
            "quantization": (
                {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
                if quantize
                else None
            ),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    prepared.prepare_folder(target, build, manifest=MANIFEST, hashed=False)
    if not _is_ready(target, fingerprint, quantize):
        raise EmbeddingError(f"the ONNX export at {target} is incomplete: delete it and retry")
    report(f"ONNX model ready at {target} ({time.perf_counter() - started:.0f} s)")
    return target


def _export(model_dir: Path, path: Path) -> list[str]:
    """``torch.onnx.export`` of the encoder's ``last_hidden_state``; returns the input names."""
    import inspect
    import warnings

    hide_broken_torch_extras()
    with extra("retrieval", feature="exporting the embedding model to ONNX"):
        import torch
        from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class Encoder(torch.nn.Module):
        """Calls the model with keyword arguments (transformers 5 rejects positional ones)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            output = self.model(**dict(zip(names, inputs, strict=True)))
            hidden: torch.Tensor = output.last_hidden_state
            return hidden

    # Two rows of different lengths, so the traced graph keeps the padding-mask path.
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    dummy = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    axes = {0: "batch", 1: "sequence"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(),
            tuple(dummy[n] for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: axes for n in [*names, "last_hidden_state"]},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


class _QuietQuantizer(logging.Filter):
    """Drops the quantizer's per-node lines and pre-processing hint (logged on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and "pre-processing" not in str(record.msg)


def _quantize(source: Path, target: Path) -> None:
    with extra("retrieval", feature="quantizing the ONNX embedding model"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)  # only affects records logged on the root logger
    try:
        # Per-tensor scales (the default) drift ~7x further from fp32 than per-channel ones.
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False
        )
    finally:
        logging.getLogger().removeFilter(quiet)
