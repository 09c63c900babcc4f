"""Benchmarks: ``scriptorium bench NAME`` runs one and prints its JSON as the last line.

Each benchmark measures the things it compares side by side in one run, because the
machines are shared and noisy; ratios are the figures to trust.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def _registry() -> dict[str, Any]:
    from scriptorium.bench.registry import run

    return dict(await run())


async def _a2a_hop() -> dict[str, Any]:
    from scriptorium.bench.a2a_hop import run

    return dict(await run())


BENCHMARKS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "registry": _registry,
    "a2a-hop": _a2a_hop,
}
