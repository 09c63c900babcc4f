"""Benchmarks: ``scriptorium bench NAME`` runs one and prints its JSON as the last line.

Each module exposes ``async def run() -> dict``. A benchmark measures the things it compares
side by side in one run, because the machines are shared and noisy; ratios are the figures
to trust. ``scriptorium bench --help`` lists every entry of :data:`BENCHMARKS` with
:func:`describe`: its summary, or the first line of its module's docstring.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Benchmark = Callable[..., Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class LazyBenchmark:
    """A benchmark module's ``run``, imported only when the benchmark runs."""

    module: str
    summary: str = ""
    #: Keyword arguments its ``run`` takes (``scriptorium bench`` options of the same name).
    options: tuple[str, ...] = ()

    async def __call__(self, **options: Any) -> Mapping[str, Any]:
        result: Mapping[str, Any] = await importlib.import_module(self.module).run(**options)
        return result


def _lazy(module: str, summary: str = "", options: tuple[str, ...] = ()) -> LazyBenchmark:
    """The module's ``run``, imported only when the benchmark runs."""
    return LazyBenchmark(module, summary, options)


def options_of(name: str) -> tuple[str, ...]:
    """The options benchmark ``name`` takes (keyword arguments of its ``run``)."""
    benchmark = BENCHMARKS[name]
    return benchmark.options if isinstance(benchmark, LazyBenchmark) else ()


#: Benchmark name (``scriptorium bench <name>``) -> its ``run`` coroutine function.
BENCHMARKS: dict[str, Benchmark] = {
    "registry": _lazy(
        "scriptorium.bench.registry",
        "discovery and session negotiation latency on an embedded Valkey",
    ),
    "a2a-hop": _lazy(
        "scriptorium.bench.a2a_hop",
        "one A2A SendMessage round trip: plain HTTP, the bare a2a-sdk, our scaffold",
    ),
    "retrieval": _lazy(
        "scriptorium.bench.retrieval",
        "ingestion throughput, query latency and retrieval quality on 10k Wikipedia leads",
    ),
    "inference": _lazy(
        "scriptorium.bench.inference",
        "completion tokens/s through the A2A inference agent against raw vLLM",
    ),
    "streams": _lazy(
        "scriptorium.bench.streams",
        "resumable Redis-backed event streams against the SDK in memory; resume; faults; gRPC",
    ),
    "e2e": _lazy(
        "scriptorium.bench.e2e",
        "whole answers through the team (retrieve, write, critique) at 1, 4 and 8 in flight",
    ),
    "load": _lazy(
        "scriptorium.bench.load",
        "500 answers at 16 in flight: error rate, latency, Redis keys before and after",
        options=("questions", "concurrency", "registry_url"),
    ),
}


def describe(name: str) -> str:
    """One line on what benchmark ``name`` measures (read without importing its module)."""
    benchmark = BENCHMARKS[name]
    if isinstance(benchmark, LazyBenchmark):
        return benchmark.summary or _docstring_line(benchmark.module)
    return _first_line(benchmark.__doc__ or "")


def _docstring_line(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    source = Path(spec.origin).read_text(encoding="utf-8")
    return _first_line(ast.get_docstring(ast.parse(source)) or "")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return re.sub(r"^``scriptorium bench [\w-]+``:\s*", "", line).rstrip(".")
