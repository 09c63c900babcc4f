"""The servers the side-by-side benchmarks compare come up (``scriptorium.bench.servers``).

The benchmarks themselves are measured by ``scriptorium bench``, not timed here; this checks
that each server a benchmark starts serves, so a benchmark cannot rot unnoticed (the agent
servers stopped starting once authentication became the default, and nothing said so).
"""

from __future__ import annotations

import pytest

from scriptorium.bench.servers import child_servers


@pytest.mark.parametrize(
    ("module", "kinds"),
    [
        ("scriptorium.bench.a2a_hop", ("raw", "sdk", "ours")),
        ("scriptorium.bench.streams", ("sdk", "ours", "eager", "ours-b")),
    ],
    ids=["a2a-hop", "streams"],
)
async def test_every_server_a_benchmark_compares_comes_up(
    module: str, kinds: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCRIPTORIUM_AUTH", raising=False)  # a user's shell: auth by default
    async with child_servers(module, kinds, prefix="test-bench", timeout_s=120) as urls:
        assert set(urls) == set(kinds)
