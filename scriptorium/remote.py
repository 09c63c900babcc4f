"""Running a command's work against a running stack, or against a store in this process; every
failure becomes one error line and an exit code (2: the request was refused, 1: otherwise)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import httpx
from pydantic import SecretStr

from protocol.settings import CommonSettings
from scriptorium.terminal import fail

if TYPE_CHECKING:
    from agents.retriever.settings import RetrieverSettings
    from agents.scaffold.peers import Peers
    from registry.client import RegistryClient

T = TypeVar("T")


def client_settings() -> CommonSettings:
    """Settings for calling a running stack: the environment's, plus the token a local
    ``scriptorium up`` generated (``<data_dir>/stack-token``) when none is configured."""
    from protocol.auth import outgoing_credential
    from scriptorium.launcher import TOKEN_FILE

    settings = CommonSettings()
    token_file = settings.data_dir / TOKEN_FILE
    if outgoing_credential(settings) is None and token_file.is_file():
        token = SecretStr(token_file.read_text(encoding="utf-8").strip())
        return settings.model_copy(update={"token": token})
    return settings


def on_stack(
    registry_url: str | None,
    work: Callable[[Peers], Awaitable[T]],
    *,
    request_timeout_s: float | None = None,
) -> T:
    """Run ``work`` against the running stack (agents found through its registry)."""
    from agents.scaffold.peers import Peers, PeerUnavailable
    from protocol.client import SkillFailed, http_status, is_unreachable
    from registry.client import RegistryUnreachable

    settings = client_settings()
    url = (registry_url or settings.resolved_registry_url).rstrip("/")

    async def run() -> T:
        async with Peers.over_http(
            settings, caller="cli", registry_url=url, request_timeout_s=request_timeout_s
        ) as peers:
            return await work(peers)

    try:
        return asyncio.run(run())
    except (PeerUnavailable, RegistryUnreachable) as exc:
        registry = exc if isinstance(exc, RegistryUnreachable) else exc.__cause__
        if isinstance(registry, RegistryUnreachable) and isinstance(
            registry.__cause__, httpx.HTTPError
        ):
            fail(
                f"no Scriptorium stack answers at {url}: start one with `scriptorium up`, or "
                "point --registry-url / SCRIPTORIUM_REGISTRY_URL at its registry "
                "(--direct works without a stack)",
                1,
            )
        fail(str(exc), 1)
    except SkillFailed as exc:
        fail(exc.reason, 2 if exc.rejected else 1)
    except Exception as exc:
        if http_status(exc) == 413:
            fail(
                f"the agent refused a request as too large ({exc}); set "
                "SCRIPTORIUM_MAX_REQUEST_BYTES here to the agent's value",
                1,
            )
        if is_unreachable(exc):
            fail(f"the agent stopped answering ({exc!r}); `scriptorium agents` shows it", 1)
        fail(f"{type(exc).__name__}: {exc}", 1)


def registry_of(peers: Peers) -> RegistryClient:
    """The registry client of the peers :func:`on_stack` opens (discovery over HTTP)."""
    from registry.client import RegistryClient

    assert isinstance(peers.directory, RegistryClient)
    return peers.directory


def in_process(work: Callable[[RetrieverSettings], Awaitable[T]]) -> T:
    """Run ``work`` on the store the environment's retriever settings name, opened in this
    process (``--direct``)."""
    from agents.retriever.settings import RetrieverSettings
    from agents.retriever.store.base import StoreError, StoreUnavailable

    async def run() -> T:
        return await work(RetrieverSettings())

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        fail(str(exc), 1)
    except StoreError as exc:  # an unknown collection, a bad filter: the request is wrong
        fail(str(exc), 2)
    except Exception as exc:  # bad settings, the model failed to load, the disk is full, ...
        fail(f"{type(exc).__name__}: {exc}", 1)
