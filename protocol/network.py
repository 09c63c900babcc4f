"""Host and address checks: parse networks and addresses, classify them, resolve hosts."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Iterable[str]) -> list[IPNetwork]:
    """Addresses and CIDRs as network objects (a malformed entry raises ValueError)."""
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def parse_network(entry: str) -> IPNetwork | None:
    """``entry`` as a network (an address or CIDR), or None if it is not one (a host name)."""
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def parse_address(address: str) -> IPAddress | None:
    """An IP address (IPv4-mapped IPv6 unwrapped, zone id dropped), or None if not one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_allowed(address: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``address`` (an IP literal) lies inside one of ``networks``."""
    ip = parse_address(address)
    return ip is not None and any(ip in network for network in networks)


def address_kind(ip: IPAddress) -> str | None:
    """``None`` for a public unicast address, else what it is (loopback, private, ...)."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "private"
    return None


async def host_addresses(host: str, port: int, *, timeout_s: float) -> list[str]:
    """Every address ``host`` resolves to (without blocking the event loop)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})
