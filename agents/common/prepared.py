"""Prepared model folders in the model cache: built aside, listed in a manifest, moved into place.

The LLM folder (:mod:`agents.inference.model`) and the ONNX embedding export
(:mod:`agents.common.onnx_export`) are prepared the same way: :func:`prepare_folder` builds
the folder in a temporary folder beside it in the cache, writes a manifest that lists every
file, and renames it into place, so a crash never leaves a half-written model and a reader
never sees one. :func:`check_files` checks a folder against its manifest the next time.

A manifest lists each file with its SHA-256 (``hashed=True``: a full check reads every byte)
or with its size (a check cheap enough to run on every start).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: A build step: fills ``folder`` (``scratch`` is for downloads and other leftovers) and
#: returns the manifest to write beside the files (its ``files`` entry is filled in).
Build = Callable[[Path, Path], dict[str, Any]]
#: Temporary build folders older than this were left by a crashed build (younger may be live).
STALE_AFTER_S = 3600.0


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def update_from_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes into a running ``hashlib`` digest (several files, one digest)."""
    with path.open("rb") as handle:
        hashlib.file_digest(handle, lambda: digest)  # updates ``digest`` in place


def file_table(folder: Path, *, hashed: bool) -> dict[str, str | int]:
    """Every file under ``folder`` (relative path) with its SHA-256 or its size."""
    return {
        str(path.relative_to(folder)): sha256_of(path) if hashed else path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def check_files(folder: Path, files: Mapping[str, str | int]) -> list[str]:
    """Problems of ``folder``'s files against a manifest's table (empty list: intact)."""
    problems = []
    for relative, expected in files.items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif isinstance(expected, int):
            if path.stat().st_size != expected:
                problems.append(f"{relative} does not have its recorded size")
        elif sha256_of(path) != expected:
            problems.append(f"{relative} does not match its checksum")
    return problems


def read_manifest(folder: Path, name: str) -> dict[str, Any]:
    """The manifest ``name`` in ``folder``; ``OSError`` / ``ValueError`` when it is unusable."""
    data = json.loads((folder / name).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / name} is not a JSON object")
    return data


def verify(folder: Path, manifest: str) -> list[str]:
    """Problems of a prepared folder: its manifest missing or unreadable, or its files."""
    path = folder / manifest
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        files: dict[str, str | int] = read_manifest(folder, manifest)["files"]
    except (ValueError, KeyError) as exc:
        return [f"{path} is unreadable: {exc}"]
    return check_files(folder, files)


def prepare_folder(target: Path, build: Build, *, manifest: str, hashed: bool) -> None:
    """Build ``target`` with ``build`` in a temporary folder beside it, then rename it in.

    An existing ``target`` is replaced. When another process renames its own build into
    place at the same moment, the first one stays.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as tmp:
        folder, scratch = Path(tmp) / "build", Path(tmp) / "scratch"
        folder.mkdir()
        scratch.mkdir()
        description = build(folder, scratch)
        description["files"] = file_table(folder, hashed=hashed)
        (folder / manifest).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        _move_into_place(folder, target, Path(tmp) / "old")


def remove_stale_builds(target: Path, max_age_s: float = STALE_AFTER_S) -> None:
    """Delete temporary folders that a crashed build of ``target`` left behind."""
    for stale in target.parent.glob(f".{target.name}-*"):
        if stale.is_dir() and time.time() - stale.stat().st_mtime > max_age_s:
            shutil.rmtree(stale, ignore_errors=True)


def _move_into_place(folder: Path, target: Path, old: Path) -> None:
    """Rename ``folder`` to ``target``; an existing ``target`` is moved to ``old`` first."""
    if target.exists():
        target.rename(old)  # deleted with the temporary folder
    try:
        folder.rename(target)
    except OSError:
        # Another process renamed its own build into place first; keep that one.
        if not target.is_dir():
            raise
