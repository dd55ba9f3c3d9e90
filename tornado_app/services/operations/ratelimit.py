"""Token buckets kept in memory, per key (per user for sends, per username for failed logins).

Per-address limits key their buckets with ``address_key``: one IPv6 client usually holds a
whole /64 (it may pick any address in it at will), so counting IPv6 addresses one by one
would give it 2**64 fresh buckets.
"""
from __future__ import annotations

import functools
import ipaddress
import time
from typing import Dict, Optional, Tuple, overload


class RateLimiter:
    """Allows ``rate`` events per second with bursts up to ``burst``, per key."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: Dict[object, Tuple[float, float]] = {}

    def allow(self, key, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket; False when it is empty."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded memory; forgetting buckets only forgives clients
        self._buckets[key] = (tokens - cost, now)
        return True

    def has_tokens(self, key, cost: float = 1.0) -> bool:
        """True when ``key`` could take ``cost`` tokens now (nothing is taken)."""
        if self.rate <= 0 or key not in self._buckets:
            return True
        tokens, last = self._buckets[key]
        return min(self.burst, tokens + (time.monotonic() - last) * self.rate) >= cost

    def retry_after(self, key, cost: float = 1.0) -> float:
        """Seconds until ``key`` can take ``cost`` tokens (0 when it can now)."""
        if self.rate <= 0 or key not in self._buckets:
            return 0.0
        tokens, last = self._buckets[key]
        tokens = min(self.burst, tokens + (time.monotonic() - last) * self.rate)
        return max(0.0, (cost - tokens) / self.rate)

    def refund(self, key, cost: float = 1.0) -> None:
        """Give back ``cost`` tokens taken from ``key`` (the attempt did not count)."""
        if key in self._buckets:
            tokens, last = self._buckets[key]
            self._buckets[key] = (min(self.burst, tokens + cost), last)

    def reset(self, key) -> None:
        """Forget ``key`` (e.g. after a successful login)."""
        self._buckets.pop(key, None)


@overload
def address_key(address: str) -> str: ...
@overload
def address_key(address: None) -> None: ...


def address_key(address: Optional[str]) -> Optional[str]:
    """The key a client address is limited by: IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4.

    Every per-address limit uses it (logins, refreshes, registrations, hashing, …). Anything
    that is not an IP address (None, a test's placeholder) is returned unchanged.
    """
    if not address:
        return address
    return _key_of(address)


@functools.lru_cache(maxsize=4096)  # a pure function of the text: parsing an address took a few µs a request
def _key_of(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope id (fe80::1%eth0) names no other host
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
