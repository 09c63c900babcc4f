"""Benchmarks: ``scriptorium bench NAME`` runs one and prints its JSON as the last line.

Each benchmark module exposes ``async def run(...) -> dict``. A benchmark measures the things
it compares side by side in one run, because the machines are shared and noisy; ratios are
the figures to trust. :data:`BENCHMARKS` is the one list: ``scriptorium bench`` runs its
entries, and ``scriptorium bench --help`` shows each with its summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module's ``run``, imported only when the benchmark runs."""

    module: str
    #: One line on what it measures (``scriptorium bench --help``).
    summary: str
    #: Keyword arguments its ``run`` takes (``scriptorium bench`` options of the same name).
    options: tuple[str, ...] = ()

    async def run(self, **options: Any) -> Mapping[str, Any]:
        """Import the module and run it with ``options``."""
        result: Mapping[str, Any] = await importlib.import_module(self.module).run(**options)
        return result

    def refused(self, options: Mapping[str, object]) -> list[str]:
        """The names in ``options`` this benchmark does not take, sorted."""
        return sorted(set(options) - set(self.options))


#: Benchmark name (``scriptorium bench <name>``) -> its module, summary and options.
BENCHMARKS: dict[str, Benchmark] = {
    "registry": Benchmark(
        "scriptorium.bench.registry",
        "discovery and session negotiation latency on an embedded Valkey",
    ),
    "a2a-hop": Benchmark(
        "scriptorium.bench.a2a_hop",
        "one A2A SendMessage round trip: plain HTTP, the bare a2a-sdk, our scaffold",
    ),
    "retrieval": Benchmark(
        "scriptorium.bench.retrieval",
        "ingestion throughput, query latency and retrieval quality on 10k Wikipedia leads",
    ),
    "inference": Benchmark(
        "scriptorium.bench.inference",
        "completion tokens/s through the A2A inference agent against raw vLLM",
    ),
    "streams": Benchmark(
        "scriptorium.bench.streams",
        "resumable Redis-backed event streams against the SDK in memory; resume; faults; gRPC",
    ),
    "e2e": Benchmark(
        "scriptorium.bench.e2e",
        "whole answers through the team (retrieve, write, critique) at 1, 4 and 8 in flight",
    ),
    "load": Benchmark(
        "scriptorium.bench.load",
        "500 answers at 16 in flight: error rate, latency, Redis keys before and after",
        options=("questions", "concurrency", "registry_url"),
    ),
}


def help_text() -> str:
    """What ``scriptorium bench --help`` says: every benchmark with its summary."""
    listed = "\n\n".join(f"* {name}: {entry.summary}" for name, entry in BENCHMARKS.items())
    return f"Run a benchmark; the last line printed is one JSON object.\n\n{listed}"
