"""Which webhook URLs an agent posts push notifications to: http(s), public addresses by default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from a2a.utils.errors import InvalidParamsError

from protocol.network import (
    IPNetwork,
    address_allowed,
    address_kind,
    host_addresses,
    parse_address,
    parse_network,
)

MAX_URL_CHARS = 2048
log = logging.getLogger(__name__)
#: ``(host, port)`` to every address the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Refusal:
    """Why a webhook URL may not be posted to; ``transient`` if it may pass later (DNS)."""

    reason: str
    transient: bool = False


class PushUrlPolicy:
    """Which webhook URLs this agent posts to.

    http(s) only; the host must resolve to public addresses alone (the SDK's
    ``a2a.utils.push_url_validator`` rule: not loopback, private, shared, link-local,
    multicast, reserved or unspecified). ``allow_private`` also admits loopback and private
    addresses (not link-local: cloud metadata lives there). ``allowed_hosts`` names hosts
    (exact, not resolved) and networks (CIDR) admitted whatever they are.

    Called with a URL (the SDK's ``push_url_validator``) it raises ``InvalidParamsError``
    saying why a URL is refused.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Sequence[str] = (),
        resolve: Resolver | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in allowed_hosts:
            network = parse_network(entry)
            if network is None:
                names.add(entry.lower().rstrip("."))
            else:
                networks.append(network)
        self.allow_private = allow_private
        self.allowed_names = frozenset(names)
        self.allowed_networks = tuple(networks)
        self._resolve = resolve or partial(host_addresses, timeout_s=timeout_s)
        self._timeout_s = timeout_s

    async def __call__(self, url: str) -> bool:
        """Accept ``url`` or raise ``InvalidParamsError`` saying why not."""
        refusal = await self.check(url)
        if refusal is not None:
            log.info(
                "push notification URL refused",
                extra={"url": redact_url(url), "reason": refusal.reason},
            )
            raise InvalidParamsError(
                message=f"push notification URL refused: {refusal.reason}. This agent posts "
                "only to http(s) URLs on public addresses unless its operator allows more "
                "(SCRIPTORIUM_PUSH_ALLOWED_HOSTS, SCRIPTORIUM_PUSH_ALLOW_PRIVATE)"
            )
        return True

    async def check(self, url: str) -> Refusal | None:
        """Why ``url`` may not be posted to now, or None when it may (resolves the host)."""
        if len(url) > MAX_URL_CHARS:
            return Refusal(f"it is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return Refusal("it is not a valid URL")
        if parts.scheme not in ("http", "https"):
            return Refusal(f"scheme {parts.scheme!r} is not http or https")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return Refusal("it names no host")
        if host in self.allowed_names:
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                default_port = 443 if parts.scheme == "https" else 80
                addresses = await self._resolve(host, port or default_port)
        except (OSError, TimeoutError):
            return Refusal(f"host {host!r} does not resolve", transient=True)
        if not addresses:
            return Refusal(f"host {host!r} does not resolve", transient=True)
        for address in addresses:
            kind = self._refused_kind(address)
            if kind is not None:
                log.debug("push host refused", extra={"host": host, "address": address})
                return Refusal(f"host {host!r} resolves to a {kind} address")
        return None

    def _refused_kind(self, address: str) -> str | None:
        """What kind of non-public address this is, unless it is allowed."""
        ip = parse_address(address)
        if ip is None:
            return "malformed"
        if address_allowed(address, self.allowed_networks):
            return None
        kind = address_kind(ip)
        if kind in ("loopback", "private") and self.allow_private:
            return None
        return kind


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` of a URL: no credentials, query or fragment (for logs)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
