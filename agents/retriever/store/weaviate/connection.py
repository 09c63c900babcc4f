"""Opening a Weaviate client: REST and gRPC checked within the connect timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from protocol.extras import extra

with extra("retrieval", feature="the Weaviate store"):
    from weaviate import WeaviateAsyncClient
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout
    from weaviate.connect import ConnectionParams

from agents.retriever.store.base import StoreUnavailable

log = logging.getLogger(__name__)


async def open_client(
    url: str,
    *,
    grpc_port: int,
    grpc_secure: bool,
    api_key: str | None,
    connect_timeout_s: float,
    timeout_s: float,
    insert_timeout_s: float,
    translate: Callable[[BaseException], BaseException],
) -> tuple[WeaviateAsyncClient, dict[str, Any]]:
    """A connected client and the server's ``/v1/meta``; failures go through ``translate``.

    Checks, within ``connect_timeout_s``: ``GET /v1/meta`` (REST reachable, version at least
    1.27) and the client's public liveness check (``/v1/.well-known/live`` and the gRPC
    health check).
    """
    client = WeaviateAsyncClient(
        connection_params=ConnectionParams.from_url(url, grpc_port, grpc_secure),
        auth_client_secret=Auth.api_key(api_key) if api_key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=connect_timeout_s, query=timeout_s, insert=insert_timeout_s)
        ),
        # Our own checks below: the client's would also ask PyPI for its latest version.
        skip_init_checks=True,
    )
    try:
        async with asyncio.timeout(connect_timeout_s):
            await client.connect()
            if not await client.is_live():
                raise StoreUnavailable(
                    f"cannot reach Weaviate at {url} (gRPC port {grpc_port}) (connect): its "
                    "gRPC health check failed; check WEAVIATE_URL and "
                    "SCRIPTORIUM_WEAVIATE_GRPC_PORT, and that the server is up"
                )
            meta: dict[str, Any] = await client.get_meta()
    except asyncio.CancelledError:
        await quietly_close(client)
        raise
    except Exception as exc:
        await quietly_close(client)
        raise translate(exc) from exc
    return client, meta


def server_version(text: str) -> tuple[int, int, int]:
    """``1.33.0-rc.1`` as ``(1, 33, 0)`` (unknown parts as 0)."""
    parts = [int(p) if p.isdigit() else 0 for p in text.split("-")[0].split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return (parts[0], parts[1], parts[2])


async def quietly_close(client: WeaviateAsyncClient) -> None:
    """Close a client, never raising (closing a half-open one must not hide the real error)."""
    try:
        async with asyncio.timeout(5):
            await client.close()
    except Exception:  # closing a half-open client must not hide the real error
        log.debug("closing the Weaviate client failed", exc_info=True)
