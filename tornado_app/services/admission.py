"""Admission of new WebSocket and SSE streams: the handshake rate and the per-user cap.

Both are counters checked before any upgrade or stream starts: a reconnect storm is
answered ``503 server_busy`` (with a random 1-5 s ``Retry-After``) instead of being let
through all at once, and one user cannot hold more than ``max_per_user`` streams in a
process (``429 too_many_connections``). The per-user count is the registry's, so it is
per process: across processes a user may hold ``max_per_user`` streams in each.
"""
from __future__ import annotations

import random
import time
from typing import Dict, List

from ..errors import RateLimited, ServerBusy
from .ratelimit import RateLimiter
from .registry import ConnectionRegistry

_ALL = "handshakes"
RESERVATION_SECONDS = 10.0  # a handshake that never reaches its open stops counting after this


class StreamAdmission:
    """Decides whether a new stream may open now. Raises ServerBusy or RateLimited."""

    def __init__(self, registry: ConnectionRegistry, max_per_user: int, handshakes_per_second: float,
                 burst: int):
        self.registry = registry
        self.max_per_user = max_per_user
        self._handshakes = RateLimiter(handshakes_per_second, max(1, burst))
        # user id -> times of admitted handshakes whose stream is not registered yet, so that
        # many handshakes of one user arriving together cannot all pass the cap
        self._opening: Dict[int, List[float]] = {}

    def check_rate(self) -> None:
        """Take one handshake from the process's budget. Raises ServerBusy (503) past it."""
        if not self._handshakes.allow(_ALL):
            raise ServerBusy("Too many new connections right now; retry shortly",
                             retry_after=random.randint(1, 5))

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
