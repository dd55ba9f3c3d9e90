"""Presence of long-polling clients: "active in a chat" between one poll and the next.

A ``/poll/chat?chat_id=C`` client holds no connection between its polls, yet must stay
active in chat C (no notification for it) while its polls keep coming. Each (user, chat)
that polls gets one *lease*: it joins the chat through the hub like a stream does (local
count, and the broker's presence claim that other processes read), stays while a poll of
it is pending, and ends ``grace`` seconds after the last poll answered. One periodic sweep
ends the expired leases: no timer per poller.

Shape: ``_leases[(user_id, chat_id)] -> PresenceLease``.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Tuple

import tornado.ioloop

from ...tasks import spawn
from .hub import Hub
from .registry import Group

log = logging.getLogger("squall.poll_presence")


class PresenceLease:
    """Stands in the registry's presence count for one user polling one chat (a ``registry.PresenceHolder``)."""

    __slots__ = ("user_id", "chat_id", "joined_chats", "pending", "expires")

    def __init__(self, user_id: int, chat_id: int) -> None:
        self.user_id = user_id
        self.chat_id = chat_id
        self.joined_chats: Group = ()  # what ConnectionRegistry.join/leave keep for a connection
        self.pending = 0           # polls of this lease waiting right now
        self.expires = 0.0         # monotonic time the lease ends at once no poll is pending


class PollPresence:
    """Leases of polling clients' chat presence, ended by one sweep ``grace`` seconds after the last poll."""

    def __init__(self, hub: Hub, grace: float):
        self.hub = hub
        self.grace = float(grace)
        self._leases: Dict[Tuple[int, int], PresenceLease] = {}
        self._sweeper: Optional[tornado.ioloop.PeriodicCallback] = None  # between start and stop

    def start(self) -> None:
        """Start the sweep (several times per grace period, at most once a second)."""
        period = min(1.0, max(0.05, self.grace / 4))
        sweeper = self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep_soon, period * 1000)
        sweeper.start()

    def stop(self) -> None:
        """Stop the sweep; the broker drops this process's claims when it stops."""
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    async def hold(self, user_id: int, chat_id: int) -> PresenceLease:
        """A poll of ``user_id`` in ``chat_id`` starts: the user is active there until ``release`` + grace."""
        key = (user_id, chat_id)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = PresenceLease(user_id, chat_id)
        lease.pending += 1
        await self.hub.join(lease, chat_id)  # no-op when the lease has joined already
        return lease

    def release(self, lease: PresenceLease) -> None:
        """The poll answered (or its client went away): the grace period starts now."""
        lease.pending -= 1
        lease.expires = time.monotonic() + self.grace

    def is_leased(self, user_id: int, chat_id: int) -> bool:
        """True while ``user_id`` holds a lease in ``chat_id`` here (for tests and stats)."""
        return (user_id, chat_id) in self._leases

    def _sweep_soon(self) -> None:
        expired = self.expired()
        if expired:
            spawn(self._end(expired), name="poll_presence.end")

    def expired(self) -> list:
        """Remove and return the leases whose grace period is over."""
        now = time.monotonic()
        gone = [key for key, lease in self._leases.items() if lease.pending <= 0 and lease.expires <= now]
        return [self._leases.pop(key) for key in gone]

    async def _end(self, leases) -> None:
        for lease in leases:
            try:
                await self.hub.leave(lease, lease.chat_id)
            except Exception:  # the broker's claim expires by itself
                log.warning("could not end the polling presence of user %s in chat %s",
                            lease.user_id, lease.chat_id)
