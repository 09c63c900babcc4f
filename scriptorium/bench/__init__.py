"""Benchmarks: ``scriptorium bench NAME`` runs one and prints its JSON as the last line.

Each module exposes ``async def run() -> dict``. A benchmark measures the things it compares
side by side in one run, because the machines are shared and noisy; ratios are the figures
to trust.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Benchmark = Callable[[], Awaitable[Mapping[str, Any]]]


def _lazy(module: str) -> Benchmark:
    """The module's ``run``, imported only when the benchmark runs."""

    async def run() -> Mapping[str, Any]:
        result: Mapping[str, Any] = await importlib.import_module(module).run()
        return result

    return run


#: Benchmark name (``scriptorium bench <name>``) -> its ``run`` coroutine function.
BENCHMARKS: dict[str, Benchmark] = {
    "registry": _lazy("scriptorium.bench.registry"),
    "a2a-hop": _lazy("scriptorium.bench.a2a_hop"),
    "retrieval": _lazy("scriptorium.bench.retrieval"),
    "inference": _lazy("scriptorium.bench.inference"),
}
