"""Per-user usage limits: cheap reads per second, and stored messages per UTC day.

Reads: every long-poll (``/poll/*``) and ``GET /api/unread`` runs a query, so each user has
one token bucket for them (``--reads-per-user-per-second``, ``--reads-burst``); past it the
answer is 429 ``rate_limited`` with ``Retry-After``.

Messages: at most ``--messages-per-user-per-day`` stored messages per user and UTC day
(00:00 to 24:00 UTC), whatever the transport; past it a send is refused with 429
``quota_exceeded`` until the next UTC midnight. The count is kept in memory: the first
send of a user in a day reads how many messages that user stored since midnight (one
indexed query per user and day), later sends only compare and add (O(1), no query).

Several processes: each process seeds a user's count from the database once a day and
adds only the sends it accepted itself, so the quota holds exactly within a process; a
user whose sends are spread over P processes at once can store up to P times the quota
in the worst case (each process learns of the others' sends only at its next seed: a
restart, the next day, or when it forgets the user to bound its memory).

Shape: ``_counts[user_id] -> messages stored or accepted today``.
"""
from __future__ import annotations

import asyncio
import datetime
import time
from typing import Callable, Dict, Optional

from models import Message
from ...errors import RateLimited
from ...tasks import spawn
from ..storage.db import DatabaseExecutor
from .ratelimit import RateLimiter

DAY_SECONDS = 86400
MAX_TRACKED_USERS = 200_000  # past it the counts are forgotten and seeded again (memory bound)


class ReadLimit:
    """One token bucket per user for the cheap reads (long-polls, ``GET /api/unread``)."""

    def __init__(self, per_second: float, burst: int):
        self._limiter = RateLimiter(per_second, max(1, burst))

    def check(self, user_id: int) -> None:
        """Take one read of ``user_id``. Raises RateLimited (429, ``retry_after`` seconds) past the limit."""
        if not self._limiter.allow(user_id):
            raise RateLimited("Too many polls or unread reads; wait before the next one",
                              retry_after=self._limiter.retry_after(user_id))


def messages_since(user_id: int, since: datetime.datetime) -> int:
    """How many messages ``user_id`` stored since ``since`` (naive UTC). Database thread.

    Uses the index on the sender; runs once per user and day in each process.
    """
    return Message.select().where((Message.sender == user_id) & (Message.created_at >= since)
                                  & Message.event.is_null()).count()


class MessageQuota:
    """At most ``per_day`` messages per user and UTC day (0: no quota); see the module notes."""

    def __init__(self, dbx: DatabaseExecutor, per_day: int, clock: Callable[[], float] = time.time):
        self.dbx = dbx
        self.per_day = per_day
        self._clock = clock
        self._day: Optional[int] = None  # the UTC day (days since the epoch) the counts belong to
        self._counts: Dict[int, int] = {}
        self._seeding: Dict[int, asyncio.Task] = {}  # user id -> the read of that user's count

    def _roll(self, now: float) -> int:
        day = int(now // DAY_SECONDS)
        if day != self._day or len(self._counts) > MAX_TRACKED_USERS:
            self._day, self._counts, self._seeding = day, {}, {}
        return day

    async def reserve(self, user_id: int) -> None:
        """Count one message of ``user_id`` now. Raises RateLimited (429 ``quota_exceeded``) past the quota.

        Call ``release`` if the message is not stored after all. The first call of a user
        in a day waits for one read; the others are a dictionary lookup.
        """
        if self.per_day <= 0:
            return
        now = self._clock()
        day = self._roll(now)
        if user_id not in self._counts:
            task = self._seeding.get(user_id)
            if task is None:
                task = self._seeding[user_id] = spawn(self._seed(user_id, day), name="usage.seed")
            await asyncio.shield(task)
            if self._day != day or user_id not in self._counts:
                return await self.reserve(user_id)  # the day turned (or counts were dropped) meanwhile
        count = self._counts[user_id]
        if count >= self.per_day:
            raise RateLimited(f"You have stored {self.per_day} messages today, the daily quota; "
                              "it starts again at 00:00 UTC", "quota_exceeded",
                              retry_after=(day + 1) * DAY_SECONDS - now)
        self._counts[user_id] = count + 1

    async def _seed(self, user_id: int, day: int) -> None:
        try:
            since = datetime.datetime(1970, 1, 1) + datetime.timedelta(days=day)
            stored = await self.dbx.read(messages_since, user_id, since)
            if self._day == day:
                self._counts.setdefault(user_id, stored)
        finally:
            if self._seeding.get(user_id) is asyncio.current_task():
                del self._seeding[user_id]

    def release(self, user_id: int) -> None:
        """Give back a message counted by ``reserve`` that was not stored (a failure, a repeated ``client_id``)."""
        count = self._counts.get(user_id)
        if count:
            self._counts[user_id] = count - 1
