"""Prepared model folders: built aside, listed in a manifest, renamed into place, checked."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agents.common import prepared

MANIFEST = "manifest.json"


def build_with(text: str) -> prepared.Build:
    def build(folder: Path, scratch: Path) -> dict[str, Any]:
        (scratch / "download.bin").write_bytes(b"left behind")
        (folder / "weights.bin").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text("{}")
        return {"name": "tiny"}

    return build


def test_a_folder_is_built_aside_listed_with_hashes_and_checked(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tiny"
    prepared.prepare_folder(target, build_with("v1"), manifest=MANIFEST, hashed=True)
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["name"] == "tiny"
    assert manifest["files"] == {
        "sub/config.json": hashlib.sha256(b"{}").hexdigest(),
        "weights.bin": hashlib.sha256(b"v1").hexdigest(),
    }
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"], "no temporary left"
    assert prepared.verify(target, MANIFEST) == []

    (target / "weights.bin").write_text("v2")
    (target / "sub" / "config.json").unlink()
    assert prepared.verify(target, MANIFEST) == [
        "sub/config.json is missing",
        "weights.bin does not match its checksum",
    ]
    prepared.prepare_folder(target, build_with("v3"), manifest=MANIFEST, hashed=True)
    assert (target / "weights.bin").read_text() == "v3"
    assert prepared.verify(target, MANIFEST) == []


def test_a_size_manifest_checks_sizes_and_a_missing_manifest_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    prepared.prepare_folder(target, build_with("abc"), manifest=MANIFEST, hashed=False)
    assert json.loads((target / MANIFEST).read_text())["files"]["weights.bin"] == 3
    (target / "weights.bin").write_text("abcd")
    assert prepared.verify(target, MANIFEST) == ["weights.bin does not have its recorded size"]
    (target / MANIFEST).unlink()
    assert prepared.verify(target, MANIFEST) == [f"{target / MANIFEST} is missing"]


def test_a_failed_build_leaves_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    prepared.prepare_folder(target, build_with("good"), manifest=MANIFEST, hashed=True)

    def broken(folder: Path, scratch: Path) -> dict[str, Any]:
        (folder / "weights.bin").write_text("half")
        raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError, match="the build failed"):
        prepared.prepare_folder(target, broken, manifest=MANIFEST, hashed=True)
    assert (target / "weights.bin").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_temporaries_of_crashed_builds_are_removed_once_stale(tmp_path: Path) -> None:
    old, young = tmp_path / ".tiny-crashed", tmp_path / ".tiny-running"
    old.mkdir()
    young.mkdir()
    hour_ago = time.time() - 2 * prepared.STALE_AFTER_S
    os.utime(old, (hour_ago, hour_ago))
    prepared.prepare_folder(tmp_path / "tiny", build_with("x"), manifest=MANIFEST, hashed=True)
    assert not old.exists()
    assert young.exists()


def test_digests_match_hashlib(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first" * 100_000)
    b.write_bytes(b"second")
    assert prepared.sha256_of(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    running = hashlib.sha256(b"prefix")
    prepared.update_from_file(running, a)
    prepared.update_from_file(running, b)
    whole = hashlib.sha256(b"prefix" + a.read_bytes() + b.read_bytes()).hexdigest()
    assert running.hexdigest() == whole
