"""``scriptorium ingest`` and ``scriptorium search`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, cwd: Path, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCRIPTORIUM_DATA_DIR": str(data), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "scriptorium", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ingest_twice_then_search(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bees.md").write_text("# Bees\nThe queen bee lays the eggs of the colony.")
    (corpus / "valkey.txt").write_text("Valkey is a fork of the Redis key value store.")
    (corpus / "photo.jpg").write_bytes(b"\xff\xd8")
    data = tmp_path / "data"

    first = _run("ingest", "corpus", cwd=tmp_path, data=data)
    assert first.returncode == 0, first.stderr
    # ingested, replaced, unchanged, skipped, chunks
    assert _summary(first.stdout)[:5] == ["2", "0", "0", "1", "2"], first.stdout
    assert "photo.jpg: unsupported file type .jpg" in first.stdout

    second = _run("ingest", "corpus", cwd=tmp_path, data=data)
    assert second.returncode == 0, second.stderr
    assert _summary(second.stdout)[:5] == ["0", "0", "2", "1", "0"], second.stdout

    found = _run("search", "who lays eggs", "-k", "1", "--json", cwd=tmp_path, data=data)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["passages"][0]["document_id"] == "corpus/bees.md"

    empty = _run("search", "  ", cwd=tmp_path, data=data)
    assert empty.returncode == 2
    assert "empty query" in empty.stderr


def _summary(stdout: str) -> list[str]:
    """The cells of the summary table's data row."""
    rows = [line for line in stdout.splitlines() if line.startswith("\u2502")]
    return [cell.strip() for cell in rows[-1].split("\u2502")[1:-1]]
