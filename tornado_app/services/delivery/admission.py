"""Admission of new WebSocket and SSE streams: the handshake rate and the per-user cap.

Both are counters checked before any upgrade or stream starts: a reconnect storm is
answered ``503 server_busy`` (with a random 1-5 s ``Retry-After``) instead of being let
through all at once, and one user cannot hold more than ``max_per_user`` streams in a
process (``429 too_many_connections``). The per-user count is the registry's, so it is
per process: across processes a user may hold ``max_per_user`` streams in each.

Authentication comes first (an HMAC check in memory): only a valid credential takes from the
handshake budget, so a flood without one cannot make real users wait. Failed authentications
of stream and long-poll requests are counted per client address (``429
too_many_failed_auths`` past the limit); a valid credential from that address still opens,
so an address shared with an attacker (a NAT, or a hostile page making the victim's browser
send token-less requests) does not lock its real users out.

Streams that come through a trusted proxy are also counted per forwarded address (the HTTP
server counts connections per peer address, and a proxy's peer address is everyone's).
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Dict, List, Optional

from ...errors import RateLimited, ServerBusy
from ..operations.ratelimit import RateLimiter, address_key
from .registry import ConnectionRegistry

_ALL = "handshakes"
RESERVATION_SECONDS = 10.0  # a handshake that never reaches its open stops counting after this


class StreamAdmission:
    """Decides whether a new stream may open now. Raises ServerBusy or RateLimited."""

    def __init__(self, registry: ConnectionRegistry, max_per_user: int, handshakes_per_second: float,
                 burst: int, failed_auths_per_minute: int = 0, max_per_address: int = 0,
                 concurrent_opens: int = 64):
        self.registry = registry
        # Streams past their handshake that subscribe, read their state and replay at the same
        # time; the others wait their turn in order. A reconnect storm's opens are sliced so
        # that no turn of the event loop holds hundreds of replays, and established
        # connections keep being served in between (issue 26). The streams in their slots read
        # their unread state together (OpenStateBatcher), so this is also the biggest such batch:
        # at 8, the trips to the database thread, not the CPU, bounded the open rate.
        self.opening_slots = asyncio.Semaphore(max(1, concurrent_opens))
        self.max_per_user = max_per_user
        self.max_per_address = max_per_address
        self._handshakes = RateLimiter(handshakes_per_second, max(1, burst))
        self._failed_auths = RateLimiter(failed_auths_per_minute / 60.0, max(1, failed_auths_per_minute))
        # address key -> streams admitted through a trusted proxy for that forwarded address
        self._by_address: Dict[str, int] = {}
        # user id -> times of admitted handshakes whose stream is not registered yet, so that
        # many handshakes of one user arriving together cannot all pass the cap
        self._opening: Dict[int, List[float]] = {}

    def check_rate(self) -> None:
        """Take one handshake from the process's budget. Raises ServerBusy (503) past it."""
        if not self._handshakes.allow(_ALL):
            raise ServerBusy("Too many new connections right now; retry shortly",
                             retry_after=random.randint(1, 5))

    def failed_auth(self, address: Optional[str]) -> None:
        """Count a failed authentication from ``address``. Raises RateLimited (429
        ``too_many_failed_auths``) past the per-address limit; below it, returns (the caller
        answers its 401)."""
        key = address_key(address)
        if not self._failed_auths.allow(key):
            raise RateLimited("Too many failed authentications from this address; retry later",
                              "too_many_failed_auths", retry_after=self._failed_auths.retry_after(key))

    def take_address(self, address: str) -> str:
        """Count one more stream of the forwarded client ``address``; returns its key (give it back
        with ``release_address``). Raises ServerBusy (503 ``too_many_connections_per_address``)."""
        key = address_key(address)
        count = self._by_address.get(key, 0)
        if 0 < self.max_per_address <= count:
            raise ServerBusy(f"At most {self.max_per_address} connections per client address",
                             "too_many_connections_per_address", retry_after=random.randint(1, 5))
        self._by_address[key] = count + 1
        return key

    def release_address(self, key: str) -> None:
        """A stream counted by ``take_address`` has ended (or never opened)."""
        count = self._by_address.get(key, 0) - 1
        if count > 0:
            self._by_address[key] = count
        else:
            self._by_address.pop(key, None)

    def check_user(self, user_id: int) -> None:
        """Refuse a stream past the per-user cap. Raises RateLimited (429 too_many_connections)."""
        if self.max_per_user <= 0:
            return
        now = time.monotonic()
        pending = [t for t in self._opening.get(user_id, ()) if now - t < RESERVATION_SECONDS]
        if self.registry.user_count(user_id) + len(pending) >= self.max_per_user:
            raise RateLimited(f"At most {self.max_per_user} streams per user; close one first",
                              "too_many_connections", retry_after=random.randint(1, 5))
        if len(self._opening) > 10_000:
            self._opening = {u: ts for u, ts in self._opening.items() if now - ts[-1] < RESERVATION_SECONDS}
        pending.append(now)
        self._opening[user_id] = pending

    def opened(self, user_id: int) -> None:
        """An admitted stream of ``user_id`` is registered now (or failed): drop its reservation."""
        pending = self._opening.get(user_id)
        if pending:
            pending.pop(0)
            if not pending:
                del self._opening[user_id]
