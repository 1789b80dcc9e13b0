"""Where a request came from: its client's network, the /24 of an IPv4 address or the /64
of an IPv6 one, stored on each checkout attempt (never the full address). Read from the
peer address, or from X-Forwarded-For behind NOTSALE_TRUSTED_PROXIES proxies. No rule
refuses a request for its network alone: 1,000 people behind one NAT are customers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

PREFIX = {4: 24, 6: 64}


def prefix(address: str) -> str | None:
    """The network of an address ("203.0.113.7" -> "203.0.113.0/24"), None if it is none."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/{PREFIX[ip.version]}", strict=False))


def client_network(
    peer: tuple[str, int] | list[object] | None,
    headers: Iterable[tuple[bytes, bytes]],
    trusted_proxies: int,
) -> str | None:
    """The network of the client: the peer itself, or behind `trusted_proxies` proxies
    (each appending to X-Forwarded-For the address it was sent from), the address the
    farthest trusted one was sent from. Addresses an untrusted client wrote are never read."""
    address = str(peer[0]) if peer else None
    if trusted_proxies:
        forwarded = [
            part
            for name, value in headers
            if name == b"x-forwarded-for"
            for part in value.decode("latin-1").split(",")
        ]
        chain = [*forwarded, address or ""]
        address = chain[max(0, len(chain) - 1 - trusted_proxies)]
    return None if address is None else prefix(address)
