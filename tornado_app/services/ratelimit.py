"""Token buckets kept in memory, per key (per user for sends, per username for failed logins)."""
from __future__ import annotations

import ipaddress
import time
from typing import Dict, Tuple


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


def address_key(ip: str) -> str:
    """The key a client address is limited by: an IPv4 address as is, an IPv6 one by its /64.

    One IPv6 client usually holds a whole /64 (and can pick any address in it), so counting
    single IPv6 addresses would let it multiply every per-address limit by 2**64.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP (a Unix socket): limited as given
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
