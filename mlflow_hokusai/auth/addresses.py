"""Where a request comes from, for per-key IP allowlists and failed-login limits.

The client address is the socket peer, or, only when the peer is a trusted proxy
(``HOKUSAI_TRUSTED_PROXIES``, CIDRs, default none), the right-most ``X-Forwarded-For`` hop
that is not itself a trusted proxy: each proxy appends the address it saw, so hops to the
right of the first untrusted one were written by our proxies and hops to its left by the
client (who can write anything there). A forged header from an untrusted peer changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(value: str):
    """An IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def in_networks(address: str | None, networks: Iterable[Network]) -> bool:
    parsed = parse_address(address) if address else None
    return parsed is not None and any(parsed in network for network in networks)


class ClientAddress:
    def __init__(self, trusted_proxies: Sequence[str] = ()):
        self.trusted = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def of(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address, given the socket ``peer`` and the ``X-Forwarded-For``
        header values (in order)."""
        if not self.trusted or not forwarded_for or not in_networks(peer, self.trusted):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not in_networks(hop, self.trusted):
                return hop  # not an address: matches no allowlist, so refused where one is set
        return hops[0] if hops else peer
