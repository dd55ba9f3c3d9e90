"""Routing by user (issue 26): users hashed into shards, each process subscribed to its users' shards.

Shard of a user: ``user_id % shards`` (``--broker-shards``, default ``DEFAULT_SHARDS``). User ids
are the database's sequential integers, so the remainder spreads them evenly; it is stable
across versions, languages and restarts and costs nothing to compute (a string hash such as
crc32 would add work and spread sequential ids no better). Every process of a deployment must
use the same count: it decides which channel an envelope travels on.

Why 16,384 by default: a process receives every envelope of the shards it subscribes to, so
the share it must discard is about (users connected in the whole deployment) / shards for a
process holding fewer users than there are shards. With 16,384 shards a deployment of up to
about that many connected users discards almost nothing; a subscription costs Redis about
100 bytes and one SUBSCRIBE at the first user of a shard. docs/operations.md "Scaling out"
has the sizing rule.

Envelopes (``split``): an envelope for everyone, and one whose users fall into more than
``FANOUT_LIMIT`` shards, travel on the broadcast channel (every process reads it; the
recipients are in ``"u"``); any other targeted envelope is split into one envelope per shard,
each naming only that shard's users, so a process subscribed to several of them never gets a
user's event twice.

Subscriptions (``ShardInterest``): a shard is subscribed when the first user of it connects
here and unsubscribed ``linger`` seconds after the last one left (hysteresis: a reconnect, a
reload or the next long-poll of the same user within that time costs no SUBSCRIBE and no
UNSUBSCRIBE). A stream waits for ``ready(user_id)``, which returns once the broker confirmed
the subscription, before it reads what it missed from the database: every event stored after
that read is published after it, so it arrives live; every event stored before is in the
replay (the connection drops the duplicate). Nothing is lost while a user moves between
processes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Dict, List, Optional, Set, Tuple

from ....tasks import spawn

log = logging.getLogger("squall.broker.shards")

SHARDED, BROADCAST = "sharded", "broadcast"
ROUTINGS = (SHARDED, BROADCAST)
DEFAULT_SHARDS = 16384
MAX_SHARDS = 1 << 20  # --broker-shards accepts 1..MAX_SHARDS
DEFAULT_LINGER = 30.0  # seconds a shard stays subscribed after its last user left
FANOUT_LIMIT = 64  # an envelope whose users span more shards than this goes on the broadcast channel
READY_TIMEOUT = 5.0  # seconds a stream waits for its shard's subscription before its open fails
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE command (a resubscription after a failover sends many)


def shard_of(user_id: int, shards: int) -> int:
    """The shard of ``user_id`` among ``shards``."""
    return int(user_id) % shards


def split(envelope: dict, shards: int, fanout_limit: int = FANOUT_LIMIT) -> List[Tuple[Optional[int], dict]]:
    """``[(shard or None for the broadcast channel, envelope)]``: where ``envelope`` travels.

    Each user of a targeted envelope is named in exactly one of the results (no duplicates).
    """
    users = envelope.get("u")
    if users is None:
        return [(None, envelope)]
    by_shard: Dict[int, List[int]] = {}
    for uid in users:
        by_shard.setdefault(int(uid) % shards, []).append(uid)
    if len(by_shard) > fanout_limit:
        return [(None, envelope)]
    if len(by_shard) == 1:
        return [(next(iter(by_shard)), envelope)]
    return [(shard, {**envelope, "u": members}) for shard, members in by_shard.items()]


Subscriber = Callable[[List[int]], Awaitable[None]]


class ShardInterest:
    """Which shards this process needs: users held per shard, subscriptions with hysteresis.

    ``subscribe(shards)`` / ``unsubscribe(shards)`` are the broker's (they send the commands;
    the broker calls ``confirmed(shard)`` when the server acknowledges a subscription, and
    ``reset()`` when its connection is lost: every shard must then be subscribed again).
    """

    def __init__(self, shards: int, linger: float, subscribe: Subscriber, unsubscribe: Subscriber):
        self.shards = shards
        self.linger = linger
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._users: Dict[int, int] = {}  # shard -> users held
        self.wanted: Set[int] = set()  # shards subscribed or being subscribed (lingering ones included)
        self._confirmed: Set[int] = set()
        self._waiters: Dict[int, List[asyncio.Future]] = {}
        self._lingering: Dict[int, asyncio.TimerHandle] = {}
        self._to_subscribe: Set[int] = set()
        self._to_unsubscribe: Set[int] = set()
        self._flush_scheduled = False

    def hold(self, user_id: int) -> None:
        """``user_id`` has its first connection here: make sure its shard is (being) subscribed."""
        shard = shard_of(user_id, self.shards)
        self._users[shard] = self._users.get(shard, 0) + 1
        timer = self._lingering.pop(shard, None)
        if timer is not None:
            timer.cancel()  # still subscribed: the hysteresis saved an UNSUBSCRIBE and a SUBSCRIBE
        if shard not in self.wanted:
            self.wanted.add(shard)
            self._to_unsubscribe.discard(shard)
            self._to_subscribe.add(shard)
            self._schedule_flush()

    def release(self, user_id: int) -> None:
        """``user_id``'s last connection here closed: unsubscribe its shard ``linger`` s after its last user."""
        shard = shard_of(user_id, self.shards)
        left = self._users.get(shard, 0) - 1
        if left > 0:
            self._users[shard] = left
            return
        self._users.pop(shard, None)
        if shard in self.wanted and shard not in self._lingering:
            loop = asyncio.get_running_loop()
            self._lingering[shard] = loop.call_later(self.linger, self._expire, shard)

    def _expire(self, shard: int) -> None:
        self._lingering.pop(shard, None)
        if self._users.get(shard) or shard not in self.wanted:
            return
        self.wanted.discard(shard)
        self._confirmed.discard(shard)
        self._to_subscribe.discard(shard)
        self._to_unsubscribe.add(shard)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # One SUBSCRIBE for every shard asked for in the same loop iteration (a storm of opens).
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        subscribe, self._to_subscribe = sorted(self._to_subscribe), set()
        unsubscribe, self._to_unsubscribe = sorted(self._to_unsubscribe), set()
        if unsubscribe:
            spawn(self._send(self._unsubscribe, unsubscribe, "unsubscribe"), name="broker.shards.unsubscribe")
        if subscribe:
            spawn(self._send(self._subscribe, subscribe, "subscribe"), name="broker.shards.subscribe")

    async def _send(self, command: Subscriber, shards: List[int], what: str) -> None:
        try:
            for start in range(0, len(shards), SUBSCRIBE_BATCH):
                await command(shards[start:start + SUBSCRIBE_BATCH])
        except Exception as exc:  # the broker's reconnect loop subscribes every wanted shard again
            log.warning("broker: %s of %d shard(s) failed (%s: %s)", what, len(shards), type(exc).__name__, exc)

    def confirmed(self, shard: int) -> None:
        """The server acknowledged the subscription of ``shard``."""
        if shard not in self.wanted:
            return  # unsubscribed again meanwhile
        self._confirmed.add(shard)
        for future in self._waiters.pop(shard, ()):
            if not future.done():
                future.set_result(None)

    def reset(self) -> None:
        """The subscription connection was lost: no shard is confirmed until subscribed again.

        Waiting streams go on at once: once the broker is back it subscribes every wanted shard
        and then asks every local stream to resume (``on_gap``), which covers their window.
        """
        self._confirmed.clear()
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def subscribed(self) -> int:
        """How many shards are confirmed."""
        return len(self._confirmed)

    def is_confirmed(self, user_id: int) -> bool:
        """True when the shard of ``user_id`` is subscribed and acknowledged."""
        return shard_of(user_id, self.shards) in self._confirmed

    async def ready(self, user_id: int, timeout: float = READY_TIMEOUT) -> None:
        """Return once the shard of ``user_id`` is subscribed. Raises asyncio.TimeoutError after ``timeout``."""
        shard = shard_of(user_id, self.shards)
        if shard in self._confirmed:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(shard, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            waiters = self._waiters.get(shard)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[shard]

    def close(self) -> None:
        """Cancel the lingering timers (the broker stops)."""
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()

