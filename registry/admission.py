"""Admission: whether a card may register, and what its instance id is bound to.

A card is admitted when it parses and validates, its host resolves only to addresses inside
``allowed_networks``, its signature is trusted (as configured) and, with ``verify``, the
card served at its URL is the same card. See "Registration checks" in docs/registry.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.types import AgentCard

from protocol.cards import (
    CARD_PATH,
    CardError,
    card_base_url,
    card_capacity,
    card_from_dict,
    card_to_dict,
    validate_card,
)
from protocol.network import address_allowed, host_addresses, parse_networks
from protocol.signing import UNKNOWN_KEY, UNSIGNED, CardKey, CardSignatureError, verify_card
from registry.errors import (
    InvalidCard,
    InvalidRequest,
    RegistrationRefused,
    SpoofedCard,
    UntrustedCard,
)
from registry.limits import (
    INSTANCE_ID_RULE,
    MAX_CAPACITY,
    NAME_RULE,
    default_instance_id,
    is_instance_id,
    is_name,
)
from registry.settings import RegistrySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmittedCard:
    """A card that passed every check, and what registering it stores."""

    card: AgentCard
    instance_id: str
    base: str
    capacity: int
    wire: dict[str, Any]
    binding: str


class CardAdmission:
    """Checks a card before it is registered (host, signature, the card served at its URL)."""

    def __init__(self, settings: RegistrySettings, *, http: httpx.AsyncClient | None = None):
        self.settings = settings
        self._http = http
        self._networks = parse_networks(settings.allowed_networks)
        self._trusted = settings.trusted_keys()

    async def admit(
        self,
        card: AgentCard | dict[str, Any],
        *,
        instance_id: str | None = None,
        verify: bool = True,
    ) -> AdmittedCard:
        """The card, admitted; raises what :meth:`Registry.register` documents otherwise."""
        parsed = _parse_card(card)
        base, host, port = _endpoint(parsed)
        if instance_id is None:
            instance_id = default_instance_id(parsed.name, host, port)
        check_instance_id(instance_id)
        capacity = _capacity(parsed)
        await self._check_host(host, port)
        signer = self._check_signature(parsed, base)
        wire = card_to_dict(parsed)
        if verify:
            await self._verify(wire, base)
        return AdmittedCard(
            card=parsed,
            instance_id=instance_id,
            base=base,
            capacity=capacity,
            wire=wire,
            binding=binding_of(parsed, base, signer),
        )

    def _check_signature(self, card: AgentCard, base: str) -> CardKey | None:
        """The trusted key that signed ``card``, None when it is admitted unverified.

        With ``require_signed_cards`` only a card signed by a trusted key is admitted.
        Without, an unsigned card or one signed by a key the registry does not know is
        admitted (bound to its URL only), but a signature by a trusted key must verify: a
        card changed after signing is refused either way.
        """
        required = self.settings.require_signed_cards
        if self._trusted is None:
            return None  # require_signed_cards needs trusted keys (settings check)
        try:
            return verify_card(card, self._trusted)
        except CardSignatureError as exc:
            if not required and exc.reason in (UNSIGNED, UNKNOWN_KEY):
                log.info("card admitted unverified", extra={"url": base, "reason": exc.reason})
                return None
            log.warning(
                "card signature refused",
                extra={"url": base, "reason": exc.reason, "error": str(exc)},
            )
            raise UntrustedCard(exc.reason, str(exc)) from exc

    async def _check_host(self, host: str, port: int) -> None:
        try:
            addresses = await host_addresses(host, port, timeout_s=self.settings.connect_timeout_s)
            error = None
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not IDNA-encodable
            addresses, error = [], str(exc) or type(exc).__name__
        outside = [a for a in addresses if not address_allowed(a, self._networks)]
        if addresses and not outside:
            return
        # One answer whether the name does not resolve or resolves elsewhere: the registry
        # does not tell callers what internal names resolve to. The log has it.
        log.warning(
            "card host refused",
            extra={"host": host, "addresses": addresses, "outside": outside, "error": error},
        )
        raise RegistrationRefused(
            f"the card's host {host!r} does not resolve to addresses inside the allowed "
            f"networks {self.settings.allowed_networks}. Serve the agent on an allowed address "
            "(one the registry can resolve) or add its network to SCRIPTORIUM_ALLOWED_NETWORKS; "
            "the registry's log has what the host resolved to."
        )

    async def _verify(self, wire: dict[str, Any], base: str) -> None:
        url = base + CARD_PATH
        limit = self.settings.max_request_bytes
        try:
            async with asyncio.timeout(self.settings.card_fetch_timeout_s):
                async with self._client() as http:
                    body = await _fetch(http, url, limit, self._fetch_timeout())
            served = card_to_dict(card_from_dict(json.loads(body)))
        except (httpx.HTTPError, TimeoutError, _FetchError, ValueError, CardError) as exc:
            # One answer for every kind of failure: saying what does listen at the address
            # (refused, timed out, not HTTP, not a card) would make the registry a port
            # scanner. The reason goes to the log.
            log.warning(
                "card verification failed",
                extra={"url": url, "error": str(exc) or type(exc).__name__},
            )
            raise RegistrationRefused(
                f"could not fetch a valid agent card from {url}. Start the agent (it must "
                "serve the card it registers there) before registering; the registry's log "
                "has the reason."
            ) from exc
        if served != wire:
            differing = sorted(
                k for k in served.keys() | wire.keys() if served.get(k) != wire.get(k)
            )
            raise SpoofedCard(
                f"the card served at {url} differs from the submitted one (fields: "
                f"{', '.join(differing)}). Register exactly the card the agent serves."
            )

    def _fetch_timeout(self) -> httpx.Timeout:
        total = self.settings.card_fetch_timeout_s
        return httpx.Timeout(total, connect=min(total, self.settings.connect_timeout_s))

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            yield client


class _FetchError(Exception):
    pass


async def _fetch(http: httpx.AsyncClient, url: str, limit: int, limits: httpx.Timeout) -> bytes:
    async with http.stream("GET", url, timeout=limits) as response:
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _FetchError(f"the card is larger than {limit} bytes")
        return bytes(body)


def _parse_card(card: AgentCard | dict[str, Any]) -> AgentCard:
    try:
        parsed = card if isinstance(card, AgentCard) else card_from_dict(card)
        validate_card(parsed)
        card_base_url(parsed)
    except CardError as exc:
        raise InvalidCard(str(exc)) from exc
    except (ValueError, TypeError) as exc:  # e.g. a string protobuf cannot encode
        raise InvalidCard(f"not an A2A v1.0 agent card: {exc}") from exc
    if not is_name(parsed.name):
        raise InvalidCard(
            f"card.name {parsed.name!r} is not usable as an agent name: use {NAME_RULE}"
        )
    return parsed


def _endpoint(card: AgentCard) -> tuple[str, str, int]:
    """The card's base URL, host and port; :class:`InvalidCard` when they do not parse."""
    base = card_base_url(card)
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidCard(f"the card's URL {base!r} does not parse ({exc})") from exc
    return base, host, port


def _capacity(card: AgentCard) -> int:
    try:
        capacity = card_capacity(card)
    except (ValueError, OverflowError) as exc:  # nan, inf
        raise InvalidCard(f"capacity (max_sessions) is not a number ({exc})") from exc
    if not 1 <= capacity <= MAX_CAPACITY:
        raise InvalidCard(f"capacity (max_sessions) must be in 1..{MAX_CAPACITY} (got {capacity})")
    return capacity


def binding_of(card: AgentCard, base: str, signer: CardKey | None = None) -> str:
    """What an instance id is bound to: only a registration with the same binding may
    replace a live record under that id.

    The card's base URL; for a card whose signature the registry verified, the URL and the
    signing key's RFC 7638 thumbprint (``{base}#key={thumbprint}``), so that taking over a
    live id needs both the address and the key (a re-registration signed by another key,
    or unsigned, is refused with 409). Records stored before a binding existed are compared
    by their URL.
    """
    del card  # the binding depends on where the card is served and who signed it
    return base if signer is None else f"{base}#key={signer.thumbprint}"


def check_instance_id(instance_id: str) -> None:
    """Raise :class:`InvalidRequest` unless ``instance_id`` is in the instance id alphabet."""
    if not is_instance_id(instance_id):
        raise InvalidRequest(
            f"instance id {instance_id!r} is not usable: use {INSTANCE_ID_RULE} "
            "(set SCRIPTORIUM_INSTANCE_ID, or let the registry derive name@host-port)"
        )
