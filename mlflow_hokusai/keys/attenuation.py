"""Attenuation: a key that creates, rotates or changes a key makes nothing broader than itself.

A request authenticated by an API key may act on its owner's keys, its own and its siblings.
Without this rule a weak key could reach sideways: a 1-day key rotates a sibling that never
expires and receives a replacement that never expires; a 30/minute key creates a sibling with
no limit. So the result of every such change must lie within the acting key in each dimension:

- **expiry**: no later than the acting key's (none only if the acting key has none);
- **scope**: a read key makes only read keys (read keys manage no keys at all today);
- **resource limits**: within the acting key's (limited keys manage no keys at all today);
- **rate limit**: no higher, over the acting key's window and in the long run; never none
  while the acting key has one;
- **allowed IPs**: every network within one of the acting key's (anywhere only if it may be
  used from anywhere);
- **grace window** of a rotation: not past the acting key's expiry.

A key broader than the acting key can be neither rotated nor changed by it. What a request
leaves out (no expiry, no rate limit, no allowlist) is narrowed to the acting key's; what it
asks for explicitly and is broader is refused with 403 naming the dimension.

Roots, to which the rule does not apply: the offline CLI, a password login, an admin acting on
*another* user's keys (server-wide lifetime rules still apply). The bootstrap admin key has no
expiry, rate limit, allowlist or resource limit, so nothing is broader than it.

Pure: ``Bounds`` (what the acting key may hand on) and the checks; ``keys/management.py``
applies them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.resource_limits import UNLIMITED, ResourceLimits

_SECONDS = {"second": 1, "minute": 60, "hour": 3600}


def rate_of(limit: str) -> tuple[int, int]:
    """``"30/minute"`` -> (30, 60): requests and the window's seconds."""
    count, unit = limit.split("/", 1)
    return int(count), _SECONDS[unit]


def rate_within(limit: str | None, bound: str | None) -> bool:
    """True when ``limit`` lets through no more than ``bound``: no higher rate in the long run,
    and no more requests within ``bound``'s window (a 1000/hour key may send 1000 requests in
    one minute, which a 30/minute key may not). None is no limit."""
    if bound is None:
        return True
    if limit is None:
        return False
    count, window = rate_of(limit)
    bound_count, bound_window = rate_of(bound)
    if count * bound_window > bound_count * window:  # the long-run rate
        return False
    return window <= bound_window or count <= bound_count


def _networks(entries) -> list:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def ips_within(allowed: tuple[str, ...], bound: tuple[str, ...]) -> bool:
    """True when every network of ``allowed`` lies within one of ``bound`` (empty: anywhere)."""
    if not bound:
        return True
    if not allowed:
        return False
    outer = _networks(bound)
    return all(
        any(net.version == big.version and net.subnet_of(big) for big in outer)
        for net in _networks(allowed)
    )


def limits_within(limits: ResourceLimits, bound: ResourceLimits) -> bool:
    """Resource limits: anything is within an unlimited key; a limited key (which manages no
    keys) bounds only the very same limits."""
    if not (bound.limited or bound.workspace is not None):
        return True
    return limits.to_json() == bound.to_json()


@dataclass(frozen=True)
class Bounds:
    """The acting key: what it may hand on."""

    prefix: str  # its display prefix (for messages)
    expires_at: datetime | None = None
    scope: str = "write"
    rate_limit: str | None = None
    allowed_ips: tuple[str, ...] = ()
    limits: ResourceLimits = UNLIMITED

    def _refuse(self, dimension: str, message: str) -> HokusaiError:
        return HokusaiError(
            "PERMISSION_DENIED",
            f"{message} A key may not make a key broader than itself ({dimension}); use a "
            f"broader key, the key page signed in as yourself, or ask an admin.",
        )

    def check(
        self,
        *,
        what: str,
        expires_at: datetime | None,
        scope: str,
        rate_limit: str | None,
        allowed_ips: tuple[str, ...],
        limits: ResourceLimits,
    ) -> None:
        """Raise a 403 naming the first dimension in which ``what`` (e.g. "the new key") is
        broader than this key."""
        me = f"this API key ({self.prefix}…)"
        if self.expires_at is not None and (expires_at is None or expires_at > self.expires_at):
            later = "never expires" if expires_at is None else f"expires at {_iso(expires_at)}"
            raise self._refuse(
                "expiry",
                f"{_cap(what)} {later}, after {me}, which expires at {_iso(self.expires_at)}.",
            )
        if self.scope == "read" and scope != "read":
            raise self._refuse("scope", f"{_cap(what)} is a write key and {me} is read-only.")
        if not limits_within(limits, self.limits):
            raise self._refuse(
                "resource limits", f"{_cap(what)} reaches beyond the resource limits of {me}."
            )
        if not rate_within(rate_limit, self.rate_limit):
            theirs = "no rate limit" if rate_limit is None else f"a rate limit of {rate_limit}"
            raise self._refuse(
                "rate_limit", f"{_cap(what)} has {theirs}, above {me}'s {self.rate_limit}."
            )
        if not ips_within(allowed_ips, self.allowed_ips):
            theirs = ", ".join(allowed_ips) or "anywhere"
            raise self._refuse(
                "allowed_ips",
                f"{_cap(what)} may be used from {theirs}, beyond {me}'s "
                f"{', '.join(self.allowed_ips)}.",
            )

    def check_grace(self, ends_at: datetime) -> None:
        """A rotation's overlap window may not run past this key's expiry."""
        if self.expires_at is not None and ends_at > self.expires_at:
            raise self._refuse(
                "grace_seconds",
                f"The old key would work until {_iso(ends_at)}, after this API key "
                f"({self.prefix}…) expires at {_iso(self.expires_at)}: pass a shorter "
                "'grace_seconds'.",
            )


def _iso(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
