"""``scriptorium ingest`` / ``search`` as a user runs them: clients of the running stack.

One stack (registry + retriever, real processes) serves the module. Requests are capped at
64 KiB on both sides, so an ingestion goes out in several batches over the real wire.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

import scriptorium.bench
from agents.retriever.store.lancedb import LanceStore
from protocol.client import skill_message
from protocol.payloads import IngestRequest
from scriptorium.bench import BENCHMARKS
from scriptorium.cli import app
from scriptorium.ingest import file_batches
from scriptorium.launcher import Stack, free_port
from scriptorium.testing import StackFactory

LIMIT = 64 * 1024
WORDS = ["pollination", "honeycombs", "beekeepers", "nectarines", "swarming"]


@pytest.fixture(scope="module")
def stack(stack_factory: StackFactory) -> Iterator[Stack]:
    team = stack_factory(agents=("retriever",), env={"SCRIPTORIUM_MAX_REQUEST_BYTES": str(LIMIT)})
    yield team
    team.stop()  # its processes do not idle through later modules


@pytest.fixture
def cli(stack: Stack, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``scriptorium ARGS`` in ``tmp_path`` against the module's stack and its store."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scriptorium", *args],
            cwd=tmp_path,
            env={
                **os.environ,
                "SCRIPTORIUM_REGISTRY_URL": stack.registry_url,
                "SCRIPTORIUM_DATA_DIR": str(stack.settings.data_dir),
                "SCRIPTORIUM_MAX_REQUEST_BYTES": str(LIMIT),
                "COLUMNS": "200",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def _corpus(folder: Path) -> Path:
    """7 files, 8 documents: a .jsonl of 4 records, 2 files too big to batch, 1 skipped."""
    folder.mkdir()
    (folder / "bees.md").write_text("# Bees\nThe queen bee lays the eggs of the colony.")
    (folder / "valkey.txt").write_text("Valkey is a fork of the Redis key value store.")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8")
    records = [
        {"id": "r1", "text": "Otters hold hands while they sleep.", "year": 2024},
        {"id": "r2", "text": "Ünïcödé tëxt: 日本語のテキスト。", "title": "Non-ASCII"},
        {"id": "r3", "text": "Owls hunt at night.", "metadata": {"tags": ["birds"]}},
        {"id": "r4", "text": "Moles dig tunnels.", "weight": 0.08},
    ]
    (folder / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for n in (1, 2):  # 36 KB each: two do not fit in one 64 KiB request
        words = " ".join(WORDS[(i + n) % len(WORDS)] for i in range(3300))
        (folder / f"long-{n}.md").write_text(f"# Long {n}\n{words}.")
    # 70 KB in one document: more than one request carries (and few words to embed)
    (folder / "huge.txt").write_text("pneumonoultramicroscopically " * 2_400)
    return folder


def _summary(stdout: str) -> list[str]:
    """The cells of the summary table's data row."""
    rows = [line for line in stdout.splitlines() if line.startswith("\u2502")]
    return [cell.strip() for cell in rows[-1].split("\u2502")[1:-1]]


def test_ingest_and_search_go_through_the_stack(cli: Callable[..., Any], tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus")

    first = cli("ingest", "corpus")
    assert first.returncode == 0, first.stderr
    # ingested, replaced, unchanged, skipped, chunks
    assert _summary(first.stdout)[:4] == ["8", "0", "0", "2"], first.stdout
    assert "stored by the retriever at http://" in first.stdout
    assert "photo.jpg: unsupported file type .jpg" in first.stdout
    assert re.search(r"huge\.txt: \d+ bytes as JSON, more than one request may carry", first.stdout)
    # the progress bar counts files (the .jsonl is one file of four documents)
    assert "7/7 files · 8 docs" in first.stderr, first.stderr

    again = cli("ingest", "corpus")
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)[:5] == ["0", "0", "8", "2", "0"], again.stdout
    # the same files are stored the same either way; in-process there is no request limit
    direct = cli("ingest", "corpus", "--direct")
    assert direct.returncode == 0, direct.stderr
    assert _summary(direct.stdout)[:4] == ["1", "0", "8", "1"], direct.stdout
    assert "stored in this process (lancedb)" in direct.stdout

    found = cli("search", "who lays eggs", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["passages"][0]["document_id"] == "corpus/bees.md"
    empty = cli("search", "  ")
    assert empty.returncode == 2
    assert "empty query" in empty.stderr


def test_batches_stay_under_the_limit_and_count_whole_files(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    batches = list(file_batches([corpus], root=tmp_path, max_bytes=LIMIT))
    for batch in batches:
        request = skill_message("ingest", IngestRequest(documents=batch.documents))
        envelope = {
            "id": "5f0c6f1e-9f6a-4b7e-8a38-6a3c8e0d1c2b",
            "jsonrpc": "2.0",
            "method": "SendStreamingMessage",
            "params": json_format.MessageToDict(request),
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        assert batch.size < len(body) <= LIMIT  # as the A2A client encodes it
    # files in walk order: bees, facts (4 records), huge (too big), long-1, long-2, photo
    # (skipped), valkey; a file is done with its last document, one with none at once
    assert [(b.files_before, b.files_done) for b in batches] == [(0, 4), (4, 7)]
    done = {d.id: n for b in batches for d, n in zip(b.documents, b.done_after, strict=True)}
    assert done == {
        "corpus/bees.md": 1,
        "r1": 1,
        "r2": 1,
        "r3": 1,
        "r4": 3,
        "corpus/long-1.md": 4,
        "corpus/long-2.md": 6,
        "corpus/valkey.txt": 7,
    }


def test_the_retriever_sees_what_another_process_committed(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "bees.md").write_text("# Bees\nThe queen bee lays the eggs.")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "otters.md").write_text("# Otters\nOtters hold hands while asleep.")
    assert cli("ingest", "one", "--collection", "shared").returncode == 0
    first = cli("search", "otters asleep", "--collection", "shared", "-k", "1", "--json")
    assert json.loads(first.stdout)["passages"][0]["document_id"] == "one/bees.md"

    # another process writes the collection the retriever has open
    direct = cli("ingest", "two", "--collection", "shared", "--direct")
    assert direct.returncode == 0, direct.stderr

    def top() -> str:
        found = cli("search", "otters asleep", "--collection", "shared", "-k", "1", "--json")
        assert found.returncode == 0, found.stderr
        return str(json.loads(found.stdout)["passages"][0]["document_id"])

    _wait_for(lambda: top() == "two/otters.md", timeout_s=20)
    assert cli("search", "otters", "--collection", "shared", "--direct").returncode == 0


def test_unknown_and_empty_collections(
    cli: Callable[..., Any], stack: Stack, tmp_path: Path
) -> None:
    # made by this process after the retriever started: it is found all the same
    store = LanceStore(stack.settings.data_dir / "lancedb", dim=384)
    asyncio.run(store.ensure_collection("hollow"))

    unknown = cli("search", "anything", "--collection", "nope")
    assert unknown.returncode == 2
    assert "collection 'nope' does not exist (known collections:" in unknown.stderr
    assert "hollow" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1

    empty = cli("search", "anything", "--collection", "hollow")
    assert empty.returncode == 0, empty.stderr
    assert "collection 'hollow' is empty; run `scriptorium ingest PATH --collection hollow`" in (
        empty.stderr
    )
    as_json = cli("search", "anything", "--collection", "hollow", "--json")
    assert json.loads(as_json.stdout) == {"query": "anything", "passages": []}


@pytest.mark.parametrize("command", [("search", "bees"), ("ingest", "nothing-here")])
def test_a_stack_that_is_not_running_is_one_clear_error(
    cli: Callable[..., Any], command: tuple[str, ...]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli(*command, "--registry-url", url)
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"no Scriptorium stack answers at {url}: start one with `scriptorium up`" in line


def test_bench_help_lists_every_benchmark() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, benchmark in BENCHMARKS.items():
        assert benchmark.summary
        assert f"{name}: {benchmark.summary}" in result.output


def test_every_benchmark_module_is_registered_with_the_options_its_run_takes() -> None:
    """A module of ``scriptorium/bench`` with a ``run`` is a benchmark: it must be listed
    (and so shown by ``bench --help``); read from the source, nothing imported."""
    folder = Path(scriptorium.bench.__file__).parent
    runs = {}
    for path in folder.glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AsyncFunctionDef) and node.name == "run":
                arguments = [*node.args.args, *node.args.kwonlyargs]
                runs[f"scriptorium.bench.{path.stem}"] = {a.arg for a in arguments}
    assert sorted(runs) == sorted(b.module for b in BENCHMARKS.values())
    for benchmark in BENCHMARKS.values():
        assert set(benchmark.options) <= runs[benchmark.module], benchmark.module


def test_bench_refuses_an_option_the_benchmark_does_not_take() -> None:
    result = CliRunner().invoke(app, ["bench", "registry", "--questions", "3"])
    assert result.exit_code == 2
    assert "takes no --questions" in result.output


def _wait_for(condition: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s"
