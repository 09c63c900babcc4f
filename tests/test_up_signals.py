"""`scriptorium up` stops cleanly on SIGINT and SIGTERM, even started as a background job.

A shell starts background jobs with SIGINT ignored; Python then installs no SIGINT handler
of its own, so `up` has to install its handlers itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from scriptorium.testing import wait_for
from tests.test_stack import _free_base_port


def _ignore_sigint() -> None:  # pragma: no cover - runs in the child, before exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _healthy(registry: str, agent: str) -> bool:
    try:
        records = httpx.get(f"{registry}/agents", timeout=2).json()
    except httpx.HTTPError:
        return False
    return any(r["name"] == agent and r["state"] == "healthy" for r in records)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_up_started_with_sigint_ignored_stops_on_the_signal(
    redis_url: str, redis_prefix: str, tmp_path: Path, signum: signal.Signals
) -> None:
    base = _free_base_port()
    registry = f"http://127.0.0.1:{base}"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SCRIPTORIUM_REDIS_PREFIX": redis_prefix,
        "SCRIPTORIUM_HEARTBEAT_INTERVAL_S": "0.5",
    }
    command = ["up", "--agents", "retriever", "--no-live", "--base-port", str(base)]
    up = subprocess.Popen(
        [sys.executable, "-m", "scriptorium", *command, "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigint,
    )
    try:
        await wait_for(
            lambda: up.poll() is not None or _healthy(registry, "retriever"),
            90,
            "the retriever did not come up",
        )
        assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 2  # the registry and the retriever
        up.send_signal(signum)
        output, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, output.decode()
    assert "nothing left running" in output.decode()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{registry}/healthz", timeout=2)
