"""Presence (issue 25): who is online and when they were last seen, shown only to people who share a chat.

Online means a notification stream (WebSocket, SSE or long-poll) open on any process: the
same ``Hub.online_users`` that Web Push and the webhooks ask. ``HubListeners.on_online`` tells this
process when its first stream of a user opens or its last one closes; then:

- opened: co-members get ``{"type": "presence", "user_id", "online": true, "last_seen"}``,
  unless the user had closed their last stream here less than ``grace`` seconds before (a
  reconnect says nothing);
- closed: ``grace`` seconds later, if the user has no stream on any process, ``last_seen`` is
  stored and co-members get ``"online": false``.

``last_seen`` is kept to the minute (UTC, seconds cut off), to limit how closely one user
can follow another. Privacy works both ways: a user whose ``share_presence`` preference is
false is shown to nobody and sees nobody (their lookups answer nothing, they get no events).
A user may get the same state twice (streams opened on two processes): events are states, not toggles.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, Dict, Iterable, List, Optional, Set

from models import ChatMember, User, utcnow
from ...errors import ValidationError
from ...tasks import spawn
from ..delivery.events import NOTIFY, dumps, iso
from ..delivery.hub import ONLINE, Hub
from ..delivery.preferences import PreferenceService
from ..storage.db import DatabaseExecutor

log = logging.getLogger("squall.presence")

MAX_LOOKUP = 100  # user ids per GET /api/presence
USER_ID: Any = User._meta.primary_key  # Peewee's implicit id (its stubs do not know it)


def _all(query: Any) -> List[Any]:
    """A query's rows, typed as Any: Peewee's attributes are dynamic."""
    return list(query)


def to_minute(when: datetime.datetime) -> datetime.datetime:
    """``when`` with its seconds cut off: last seen is kept this coarse."""
    return when.replace(second=0, microsecond=0)


def co_members(user_id: int) -> List[int]:
    """Everyone who shares a chat with ``user_id`` (reader thread)."""
    chats = ChatMember.select(ChatMember.chat).where(ChatMember.user == user_id)
    return [uid for (uid,) in _all(ChatMember.select(ChatMember.user).distinct()
            .where(ChatMember.chat.in_(chats) & (ChatMember.user != user_id)).tuples())]


def shared_with(viewer: int, user_ids: List[int]) -> Set[int]:
    """Which of ``user_ids`` share a chat with ``viewer`` (reader thread)."""
    if not user_ids:
        return set()
    chats = ChatMember.select(ChatMember.chat).where(ChatMember.user == viewer)
    return {uid for (uid,) in _all(ChatMember.select(ChatMember.user).distinct()
            .where(ChatMember.chat.in_(chats) & ChatMember.user.in_(user_ids)).tuples())}


def last_seen_of(user_ids: List[int]) -> Dict[int, Optional[datetime.datetime]]:
    """Stored ``last_seen`` of ``user_ids`` (reader thread)."""
    if not user_ids:
        return {}
    return dict(_all(User.select(USER_ID, User.last_seen).where(USER_ID.in_(user_ids)).tuples()))


def store_last_seen(user_id: int, when: datetime.datetime) -> None:
    """Store ``last_seen`` (writer thread)."""
    User.update(last_seen=when).where(USER_ID == user_id).execute()


class PresenceService:
    """Presence events to co-members, presence lookups, and members' presence in chat summaries."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, preferences: PreferenceService, grace: float = 5.0):
        self.dbx = dbx
        self.hub = hub
        self.preferences = preferences
        self.grace = grace  # --presence-grace: seconds without any stream before "offline"
        self._offline_checks: Dict[int, asyncio.TimerHandle] = {}  # user id -> pending offline check
        self._tasks: Set[asyncio.Task] = set()  # presence being told: cancelled at shutdown
        self._closed = False

    def close(self) -> None:
        """Cancel pending offline checks (shutdown)."""
        self._closed = True
        for handle in self._offline_checks.values():
            handle.cancel()
        self._offline_checks.clear()
        for task in list(self._tasks):
            task.cancel()

    def changed(self, user_id: int, online: bool) -> None:
        """``HubListeners.on_online``: this process's first notification stream of ``user_id`` opened, or its last closed."""
        if self._closed:
            return
        pending = self._offline_checks.pop(user_id, None)
        if pending is not None:
            pending.cancel()
        if online:
            if pending is None:  # back within the grace period: nobody was told offline
                self._track(spawn(self._tell(user_id, True), name="presence.online"))
            return
        loop = asyncio.get_running_loop()
        self._offline_checks[user_id] = loop.call_later(
            self.grace, lambda: self._track(spawn(self._offline_if_gone(user_id), name="presence.offline")))

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offline_if_gone(self, user_id: int) -> None:
        self._offline_checks.pop(user_id, None)
        if self.hub.registry.is_active(user_id, ONLINE):
            return
        try:
            if await self.hub.online_users([user_id]):
                return  # still online on another process
            await self._tell(user_id, False)
        except Exception as exc:
            log.warning("telling the presence of user %s failed (%s)", user_id, type(exc).__name__)

    async def _tell(self, user_id: int, online: bool) -> None:
        """Store ``last_seen`` and publish the presence of ``user_id`` to the co-members who may see it."""
        try:
            seen = to_minute(utcnow())
            await self.dbx.write(store_last_seen, user_id, seen)
            if not (await self.preferences.get(user_id)).share_presence:
                return
            audience = await self.dbx.read(co_members, user_id)
            if not audience:
                return
            prefs = await self.preferences.many(audience)
            audience = [uid for uid in audience if uid in prefs and prefs[uid].share_presence]
            if audience:
                data = dumps({"type": "presence", "user_id": user_id, "online": online, "last_seen": iso(seen)})
                # Notification streams only: /sse/chat and /poll/chat carry them too, and a
                # second publish on CHAT would reach those twice. /ws/chat clients open
                # /ws/notifications beside it (as the web page does).
                await self.hub.publish(NOTIFY, audience, data)
        except Exception as exc:
            log.warning("telling the presence of user %s failed (%s)", user_id, type(exc).__name__)

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
