"""`scriptorium up` stops cleanly on SIGINT and SIGTERM, even started as a background job, and
nothing but a signal or a dead component stops it: not a Valkey outage, not a hostile card.

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
from rich.console import Console

from scriptorium.agents_view import agents_table
from scriptorium.testing import wait_for
from tests.conftest import RestartableValkey
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


async def test_fault_up_keeps_running_and_shows_a_valkey_outage(
    own_valkey: RestartableValkey, tmp_path: Path
) -> None:
    base = _free_base_port()
    registry = f"http://127.0.0.1:{base}"
    env = {
        **os.environ,
        "REDIS_URL": own_valkey.url,
        "SCRIPTORIUM_HEARTBEAT_INTERVAL_S": "0.5",
    }
    command = ["up", "--agents", "retriever", "--base-port", str(base)]
    output = tmp_path / "up.out"
    with output.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "scriptorium", *command, "--data-dir", str(tmp_path)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    said = lambda: output.read_text(errors="replace")  # noqa: E731
    try:
        await wait_for(  # `up` itself has seen the stack healthy and is watching it
            lambda: up.poll() is not None or "healthy; watching the registry" in said(),
            90,
            "the retriever did not come up",
        )
        own_valkey.stop()
        await wait_for(
            lambda: up.poll() is not None or "registry unreachable" in said(),
            30,
            "`up` did not say that the registry is unreachable",
        )
        assert up.poll() is None, said()
        assert "503" in said(), "the outage says what the registry answered"
        own_valkey.start()
        await wait_for(
            lambda: up.poll() is not None or "registry reachable again" in said(),
            30,
            "`up` did not notice the registry is back",
        )
        assert up.poll() is None, said()
        await wait_for(
            lambda: _healthy(registry, "retriever"), 30, "the retriever did not register again"
        )
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, said()


def test_a_card_with_markup_in_its_strings_is_shown_as_written() -> None:
    record = {
        "id": "x",
        "name": "[/]",
        "state": "[bold]healthy",
        "url": "http://x/[red]",
        "skills": ["[/link]", "search"],
        "load": 0,
        "leased": 0,
        "capacity": 1,
        "last_seen": 0,
    }
    console = Console(record=True, width=200)
    console.print(agents_table([record]))
    shown = console.export_text()
    for text in ("[/]", "[bold]healthy", "http://x/[red]", "[/link], search"):
        assert text in shown
