"""Admission of new WebSocket and SSE streams: the handshake rate and the per-user cap.

Both are counters checked before any upgrade or stream starts: a reconnect storm is
answered ``503 server_busy`` (with a random 1-5 s ``Retry-After``) instead of being let
through all at once, and one user cannot hold more than ``max_per_user`` streams in a
process (``429 too_many_connections``). The per-user count is the registry's, so it is
per process: across processes a user may hold ``max_per_user`` streams in each.
"""
from __future__ import annotations

import random

from ..errors import RateLimited, ServerBusy
from .ratelimit import RateLimiter
from .registry import ConnectionRegistry

_ALL = "handshakes"


class StreamAdmission:
    """Decides whether a new stream may open now. Raises ServerBusy or RateLimited."""

    def __init__(self, registry: ConnectionRegistry, max_per_user: int, handshakes_per_second: float,
                 burst: int):
        self.registry = registry
        self.max_per_user = max_per_user
        self._handshakes = RateLimiter(handshakes_per_second, max(1, burst))

    def check_rate(self) -> None:
        """Take one handshake from the process's budget. Raises ServerBusy (503) past it."""
        if not self._handshakes.allow(_ALL):
            raise ServerBusy("Too many new connections right now; retry shortly",
                             retry_after=random.randint(1, 5))

    def check_user(self, user_id: int) -> None:
        """Refuse a stream past the per-user cap. Raises RateLimited (429 too_many_connections)."""
        if self.max_per_user > 0 and self.registry.user_count(user_id) >= self.max_per_user:
            raise RateLimited(f"At most {self.max_per_user} streams per user; close one first",
                              "too_many_connections", retry_after=random.randint(1, 5))
