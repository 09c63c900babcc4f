"""A core-only install (no extras) gets an error naming the extra to install (issue #13).

Each check runs a fresh interpreter in which the optional packages cannot be imported, as on
a machine where only ``pip install scriptorium`` ran, and imports one of our modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.inference.settings import InferenceSettings
from protocol.extras import MissingExtra

ROOT = Path(__file__).parents[1]
#: The import names of the `retrieval` extra and what it pulls in.
RETRIEVAL = (
    "lancedb",
    "pyarrow",
    "weaviate",
    "numpy",
    "onnxruntime",
    "onnx",
    "tokenizers",
    "sentence_transformers",
    "transformers",
    "torch",
    "pypdf",
    "sklearn",
)
INSTALL_RETRIEVAL = "pip install 'scriptorium[retrieval]'"

#: Block the named packages (a None entry in sys.modules makes every import of them fail
#: with ModuleNotFoundError), import the module, report what was raised.
CHILD = """
import json, sys
blocked, module = json.loads(sys.argv[1]), sys.argv[2]
for name in blocked:
    sys.modules[name] = None
try:
    __import__(module)
except ImportError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc), "name": exc.name}))
else:
    print(json.dumps({"type": None}))
"""


def import_without(blocked: tuple[str, ...], module: str) -> dict[str, str | None]:
    """What importing ``module`` raises in a child interpreter without ``blocked``."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(blocked), module],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report: dict[str, str | None] = json.loads(child.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("blocked", "module"),
    [
        (RETRIEVAL, "agents.retriever.agent"),
        (RETRIEVAL, "agents.common.embedding"),
        (RETRIEVAL, "agents.common.vectors"),
        (RETRIEVAL, "agents.retriever.store.weaviate"),
        (("lancedb",), "agents.retriever.agent"),
        (("weaviate",), "agents.retriever.store.weaviate"),
        (RETRIEVAL, "agents.writer.agent"),
        (RETRIEVAL, "agents.critic.agent"),
        (("sklearn",), "agents.critic.agent"),
        (("sklearn",), "agents.critic.training.train"),
    ],
    ids=[
        "core-retriever",
        "core-embedding",
        "core-vectors",
        "core-weaviate",
        "lancedb",
        "weaviate",
        "core-writer",
        "core-critic",
        "sklearn-critic",
        "sklearn-training",
    ],
)
def test_a_missing_optional_package_names_the_extra_to_install(
    blocked: tuple[str, ...], module: str
) -> None:
    raised = import_without(blocked, module)
    assert raised["type"] == "MissingExtra", raised
    message = str(raised["message"])
    assert "needs the 'retrieval' extra" in message
    assert INSTALL_RETRIEVAL in message
    assert str(raised["name"]).split(".")[0] in blocked, "the missing package is named"


def test_the_retriever_imports_when_the_extra_is_installed() -> None:
    assert import_without((), "agents.retriever.agent") == {"type": None}


def test_the_managed_engine_without_vllm_names_the_cpu_and_gpu_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents.inference.engine import ManagedEngine

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingExtra) as missing:
        ManagedEngine(InferenceSettings(model="/nonexistent"))
    assert missing.value.extras == ("cpu", "gpu")
    assert "pip install 'scriptorium[cpu]'" in str(missing.value)
    assert "pip install 'scriptorium[gpu]'" in str(missing.value)


def test_an_embedder_without_onnxruntime_names_the_retrieval_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agents.common.embedding import OnnxEmbedder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match="the ONNX embedding backend needs the 'retrieval'"):
        OnnxEmbedder(tmp_path)
