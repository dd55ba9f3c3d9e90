"""Presence (issue 25): who is online and when they were last seen, shown only to people who share a chat.

Online means a notification stream (WebSocket, SSE or long-poll) open on any process: the
same ``Hub.online_users`` that Web Push and the webhooks ask. ``HubListeners.on_online`` tells this
process when its first stream of a user opens or its last one closes; then:

- opened: co-members get ``{"type": "presence", "user_id", "online": true, "last_seen"}``,
  unless the user had closed their last stream here less than ``grace`` seconds before (a
  reconnect says nothing);
- closed: ``grace`` seconds later, if the user has no stream on any process, ``last_seen`` is
  stored and co-members get ``"online": false``.

The work is batched, as a busy server sees thousands of streams open a second: ``changed``
only notes the user's new state (the latest wins; an offline check that has not been told
yet is simply dropped by a reconnect), and one flush at a time, ``LINGER`` seconds after the
first change it takes, tells a batch of up to ``MAX_BATCH`` users: one online check across
processes for those going offline, then on the writer thread in one trip one UPDATE of
``last_seen`` for all of them and one read of the co-members of all of them (with the
``share_presence`` switches of both sides), then one publish per user who has someone to tell. The grace periods share one timer (their
deadlines come in the order they were set). Nothing is kept per online user here: the hub's claim is what says "online".

``last_seen`` is kept to the minute (UTC, seconds cut off), to limit how closely one user
can follow another. Privacy works both ways: a user whose ``share_presence`` preference is
false is shown to nobody and sees nobody (their lookups answer nothing, they get no events).
A user may get the same state twice (streams opened on two processes): events are states, not toggles.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import itertools
import logging
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from models import User, utcnow
from ...errors import ValidationError
from ...tasks import spawn
from ..delivery.events import NOTIFY, dumps, iso
from ..delivery.hub import ONLINE, Hub
from ..delivery.preference_store import hiding_presence
from ..delivery.preferences import PreferenceService
from ..storage.db import DatabaseExecutor
from ..storage.sql import update_in
from .group_store import co_members, shared_with, sharing_pairs

log = logging.getLogger("squall.presence")

MAX_LOOKUP = 100  # user ids per GET /api/presence
# Users told per flush (one UPDATE, one read, one online check); the rest wait for the next
# flush. Also the size of the id lists in one SQL statement (SQLite's limit on variables).
MAX_BATCH = 500
# Seconds a flush waits before it takes its batch, so that the streams of a busy moment share
# it (at a thousand connects a second, some fifty users per batch); small beside a human's eye.
LINGER = 0.05
USER_ID: Any = User._meta.primary_key  # Peewee's implicit id (its stubs do not know it)


def _all(query: Any) -> List[Any]:
    """A query's rows, typed as Any: Peewee's attributes are dynamic."""
    return list(query)


def _chunks(ids: List[int], size: int = MAX_BATCH) -> Iterable[List[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def to_minute(when: datetime.datetime) -> datetime.datetime:
    """``when`` with its seconds cut off: last seen is kept this coarse."""
    return when.replace(second=0, microsecond=0)


def audiences(user_ids: List[int]) -> Dict[int, List[int]]:
    """``{user: co-members who may see them}`` for those of ``user_ids`` who may be seen by anyone
    (a database thread; presence reads it on the writer): one query for the pairs sharing a chat, one
    for the switches of everyone in them.

    A pair counts only while both share their presence; users without such a co-member are left out.
    """
    pairs = sharing_pairs(user_ids)
    if not pairs:
        return {}
    hidden: Set[int] = set()
    for chunk in _chunks(sorted(set(itertools.chain(user_ids, (v for _, v in pairs))))):
        hidden |= hiding_presence(chunk)
    out: Dict[int, List[int]] = {}
    for uid, other in pairs:
        if uid not in hidden and other not in hidden:
            out.setdefault(uid, []).append(other)
    return out


def last_seen_of(user_ids: List[int]) -> Dict[int, Optional[datetime.datetime]]:
    """Stored ``last_seen`` of ``user_ids`` (reader thread)."""
    if not user_ids:
        return {}
    return dict(_all(User.select(USER_ID, User.last_seen).where(USER_ID.in_(user_ids)).tuples()))


def store_last_seen(user_ids: List[int], when: datetime.datetime) -> None:
    """Store ``last_seen`` of ``user_ids`` (writer thread): one statement per ``MAX_BATCH`` users,
    written out (Peewee built its ``IN`` list a parameter at a time: 2% of a stream open's CPU in
    the idle benchmark, as every first stream of a user stores it)."""
    update_in(User, {"last_seen": when}, user_ids, MAX_BATCH)


class PresenceService:
    """Presence events to co-members, presence lookups, and members' presence in chat summaries."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, preferences: PreferenceService, grace: float = 5.0,
                 max_batch: int = MAX_BATCH, linger: float = LINGER):
        self.dbx = dbx
        self.hub = hub
        self.preferences = preferences
        self.grace = grace  # --presence-grace: seconds without any stream before "offline"
        self.max_batch = max_batch
        self.linger = linger
        # user id -> state to tell at the next flush (True: came online; False: check, then tell offline)
        self._changes: Dict[int, bool] = {}
        # user id -> loop time of their offline check, in the order set (so in deadline order)
        self._leaving: Dict[int, float] = {}
        self._sweep: Optional[asyncio.TimerHandle] = None  # fires at the first deadline of _leaving
        self._flusher: Optional[asyncio.Task] = None  # the one flush loop, while there is something to tell
        self._closed = False
        self.flushes = 0  # batches told (tests check that the changes of a moment share one)

    def close(self) -> None:
        """Drop pending offline checks and changes, stop the flush (shutdown)."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._leaving.clear()
        self._changes.clear()
        if self._flusher is not None:
            self._flusher.cancel()

    async def drain(self) -> None:
        """Return once every change queued so far has been told (offline checks still in their grace period aside)."""
        while self._flusher is not None:
            await asyncio.wait((self._flusher,))

    def changed(self, user_id: int, online: bool) -> None:
        """``HubListeners.on_online``: this process's first notification stream of ``user_id`` opened, or its last closed."""
        if self._closed:
            return
        if online:
            if self._leaving.pop(user_id, None) is not None:
                return  # back within the grace period: nobody was told offline
            if self._changes.get(user_id) is False:
                del self._changes[user_id]  # back before the offline check ran: nobody was told offline
                return
            self._queue(user_id, True)
            return
        loop = asyncio.get_running_loop()
        self._leaving.pop(user_id, None)
        self._leaving[user_id] = loop.time() + self.grace
        if self._sweep is None:
            self._sweep = loop.call_at(self._leaving[user_id], self._due)

    def _due(self) -> None:
        """The sweep: queue the offline checks whose grace period is over, then wait for the next one."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # a timer may fire within the clock's resolution of its time
        while self._leaving:
            user_id, deadline = next(iter(self._leaving.items()))
            if deadline > now:
                self._sweep = loop.call_at(deadline, self._due)
                return
            del self._leaving[user_id]
            self._queue(user_id, False)

    def _queue(self, user_id: int, online: bool) -> None:
        self._changes[user_id] = online
        if self._flusher is None:
            self._flusher = spawn(self._flush_all(), name="presence.flush")

    async def _flush_all(self) -> None:
        """Tell the queued changes, a batch at a time, until none is left."""
        try:
            while not self._closed:
                if len(self._changes) < self.max_batch:
                    await asyncio.sleep(self.linger)  # the changes of this moment join the batch
                if not self._changes:
                    break
                batch = list(itertools.islice(self._changes.items(), self.max_batch))
                for user_id, _ in batch:
                    del self._changes[user_id]
                try:
                    await self._tell(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("telling the presence of %d user(s) failed (%s)", len(batch), type(exc).__name__)
                self.flushes += 1
        finally:
            self._flusher = None

    async def _tell(self, batch: List[Tuple[int, bool]]) -> None:
        """Store ``last_seen`` and publish the presence of a batch of users to the co-members who may see it."""
        coming = [user_id for user_id, online in batch if online]
        # Offline only if no stream came back here, nor is open on another process.
        going = [user_id for user_id, online in batch if not online and not self.hub.registry.is_active(user_id, ONLINE)]
        if going:
            elsewhere = await self.hub.online_users(going)
            going = [user_id for user_id in going if user_id not in elsewhere]
        told = coming + going
        if not told:
            return
        seen = to_minute(utcnow())
        # One trip to the writer thread: no reader thread is woken for presence (nor started: each
        # holds a database connection and its cache).
        who = await self.dbx.write_then_read(functools.partial(store_last_seen, told, seen),
                                             functools.partial(audiences, told))
        if not who:
            return
        stamp = iso(seen)
        publishes = []
        for user_id, online in itertools.chain(((u, True) for u in coming), ((u, False) for u in going)):
            audience = who.get(user_id)
            if not audience:
                continue
            here = self.hub.listening(NOTIFY, audience)  # one process: only those with a stream get it
            if here is not None:
                audience = [uid for uid in audience if uid in here]
                if not audience:
                    continue
            data = dumps({"type": "presence", "user_id": user_id, "online": online, "last_seen": stamp})
            # Notification streams only: /sse/chat and /poll/chat carry them too, and a
            # second publish on CHAT would reach those twice. /ws/chat clients open
            # /ws/notifications beside it (as the web page does).
            publishes.append(self.hub.publish(NOTIFY, audience, data))
        if publishes:
            await asyncio.gather(*publishes)

    async def sharing_changed(self, user_id: int, share: bool) -> None:
        """``PreferenceService.on_share_presence``: co-members see the switch at once.

        Hidden: ``{"online": false, "last_seen": null}`` (nothing to show, as for a stranger);
        shared again: the user's current state. Only co-members who share theirs are told.
        """
        audience = await self.dbx.read(co_members, user_id)
        if not audience:
            return
        prefs = await self.preferences.many(audience)
        audience = [uid for uid in audience if uid in prefs and prefs[uid].share_presence]
        if not audience:
            return
        online, last_seen = False, None
        if share:
            online = bool(await self.hub.online_users([user_id]))
            seen = (await self.dbx.read(last_seen_of, [user_id])).get(user_id)
            last_seen = iso(seen) if seen is not None else None
        await self.hub.publish(NOTIFY, audience, dumps({"type": "presence", "user_id": user_id, "online": online,
                                                        "last_seen": last_seen}))

    async def lookup(self, viewer: int, user_ids: Iterable[int]) -> List[dict]:
        """``[{"user_id", "online", "last_seen"}]`` of those of ``user_ids`` who share a chat with ``viewer``.

        Others (strangers, users who hide their presence) are left out; a viewer who hides
        their own presence gets an empty list.
        """
        wanted = sorted(set(user_ids) - {viewer})
        if not wanted or not (await self.preferences.get(viewer)).share_presence:
            return []
        shared = sorted(await self.dbx.read(shared_with, viewer, wanted))
        if not shared:
            return []
        return await self._visible(shared)

    async def annotate(self, viewer: int, chats: List[dict]) -> None:
        """Put ``presence`` (``{"online", "last_seen"}``) on each member of ``chats`` whom ``viewer`` may see.

        Members of the viewer's own chats share a chat with them by definition; the viewer
        and members who hide their presence get none (nor does anyone, for a viewer who hides theirs).
        """
        ids = {m["id"] for c in chats for m in c["members"]} - {viewer}
        if not ids or not (await self.preferences.get(viewer)).share_presence:
            return
        found = {p["user_id"]: p for p in await self._visible(sorted(ids))}
        for c in chats:
            for m in c["members"]:
                p = found.get(m["id"])
                if p is not None:
                    m["presence"] = {"online": p["online"], "last_seen": p["last_seen"]}

    async def _visible(self, user_ids: List[int]) -> List[dict]:
        prefs = await self.preferences.many(user_ids)
        visible = [uid for uid in user_ids if uid in prefs and prefs[uid].share_presence]
        if not visible:
            return []
        online = await self.hub.online_users(visible)
        seen = await self.dbx.read(last_seen_of, visible)
        return [{"user_id": uid, "online": uid in online,
                 "last_seen": iso(seen[uid]) if seen.get(uid) is not None else None} for uid in visible]

    @staticmethod
    def parse_ids(raw: Optional[str]) -> List[int]:
        """User ids from ``?user_ids=1,2,3`` (at most ``MAX_LOOKUP``). Raises ValidationError."""
        if raw is None or raw == "":
            raise ValidationError("give 'user_ids', a comma-separated list of user ids", "invalid_user_ids")
        parts = raw.split(",")
        if len(parts) > MAX_LOOKUP:
            raise ValidationError(f"at most {MAX_LOOKUP} user ids", "too_many_user_ids")
        out = []
        for part in parts:
            if not part.isascii() or not part.isdigit() or len(part) > 18 or int(part) < 1:
                raise ValidationError("'user_ids' must be positive integers separated by commas",
                                      "invalid_user_ids")
            out.append(int(part))
        return out
