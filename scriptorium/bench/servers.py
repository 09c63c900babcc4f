"""Servers a benchmark compares, each in a child process of its own, on one embedded Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import httpx

from protocol.cards import CARD_PATH
from scriptorium.launcher import free_port
from scriptorium.valkey import start_valkey


@contextlib.asynccontextmanager
async def child_servers(
    module: str, kinds: Sequence[str], *, prefix: str, timeout_s: float = 60.0
) -> AsyncIterator[dict[str, str]]:
    """Run ``python -m module KIND PORT`` for each kind; yields their base URLs once all
    serve their card. Valkey is theirs (``REDIS_URL``); everything stops on the way out."""
    valkey = start_valkey()
    ports = {kind: free_port() for kind in kinds}
    # The plain-HTTP and bare-SDK servers compared have no authentication: ours runs without
    # it too, so the figures compare the same work.
    env = {
        **os.environ,
        "REDIS_URL": valkey.connection_url,
        "SCRIPTORIUM_REDIS_PREFIX": prefix,
        "SCRIPTORIUM_AUTH": "off",
    }
    children = {
        kind: subprocess.Popen([sys.executable, "-m", module, kind, str(port)], env=env)  # noqa: ASYNC220
        for kind, port in ports.items()
    }
    urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            for kind, url in urls.items():
                await _wait_up(http, url + CARD_PATH, children[kind], timeout_s)
        yield urls
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            child.wait(10)
        valkey.stop()


async def _wait_up(
    http: httpx.AsyncClient, url: str, child: subprocess.Popen[bytes], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server for {url} exited ({child.returncode}); see its stderr")
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(url)).status_code < 500:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout_s:.0f}s")
