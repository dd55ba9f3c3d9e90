"""Notification preferences, chat mutes and Do Not Disturb, cached per user and per chat.

Delivery asks these questions for every notification it may create, so the answers come
from memory: a user's preferences and a chat's mutes are read from the database once, then
kept (bounded LRU caches) and updated in place by every change. A change made in one
process reaches the caches of the others as a control message over the broker
(``PreferencesChanged`` and ``SubscriptionsChanged`` drop a user's entry, ``ChatMuteChanged``
updates a chat's; see ``control``).

Shapes:
    _users[user_id] -> UserPrefs                      (LRU, at most CACHE_USERS)
    _mutes[chat_id] -> {user_id: muted until (epoch s)}  (LRU, at most CACHE_CHATS; only mutes not expired at load)
"""
from __future__ import annotations

import calendar
import datetime
import json
import logging
import re
import time
from collections import OrderedDict
from typing import Awaitable, Callable, Dict, Iterable, List, Optional, Tuple

from models import utcnow
from ...errors import ValidationError
from ...tasks import Batcher
from ..storage.db import DatabaseExecutor
from .control import ChatMuteChanged, PreferencesChanged, SubscriptionsChanged
from .events import NOTIFY, dumps, iso
from . import preference_store as store
from .hub import Hub
from .notification_store import unread_states

log = logging.getLogger("squall.preferences")

# share_presence (issue 25): false hides the user's presence from everyone and everyone's from them
DEFAULTS: Dict[str, object] = {"sound": True, "toasts": True, "push": True, "dnd_until": None, "muted_types": [],
                               "share_presence": True}
FOREVER = datetime.datetime(9999, 12, 31)  # muted_until stored for "until I unmute"
FOREVER_TS = calendar.timegm(FOREVER.timetuple())
CACHE_USERS = 100_000
CACHE_CHATS = 50_000
# Users per read of uncached preferences: the misses of concurrent lookups share one read up
# to this many users (a lookup of more is a read of its own).
LOAD_BATCH = 1000
TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
RESERVED_TYPES = ("new_message",)  # mute chats instead


def parse_time(value, name: str) -> Optional[datetime.datetime]:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC) as naive UTC, or None. Raises ValidationError."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError(f"'{name}' must be an ISO 8601 time or null")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(f"'{name}' must be an ISO 8601 time or null") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if parsed.year >= 9999:
        raise ValidationError(f"'{name}' is too far in the future (use null)")
    return parsed


def epoch(value: Optional[datetime.datetime]) -> float:
    """A naive UTC datetime as epoch seconds (0 for None)."""
    return 0.0 if value is None else calendar.timegm(value.timetuple()) + value.microsecond / 1e6


class UserPrefs:
    """One user's preferences as delivery reads them, plus how many push subscriptions they have."""

    __slots__ = ("sound", "toasts", "push", "dnd_until", "muted_types", "share_presence", "subscriptions")

    def __init__(self, data: dict, subscriptions: int):
        self.sound = data["sound"]
        self.toasts = data["toasts"]
        self.push = data["push"]
        self.dnd_until = epoch(parse_time(data["dnd_until"], "dnd_until")) if data["dnd_until"] else 0.0
        self.muted_types = frozenset(data["muted_types"])
        self.share_presence = data.get("share_presence", True)
        self.subscriptions = subscriptions

    def dnd(self, now: Optional[float] = None) -> bool:
        """True while Do Not Disturb is on."""
        return self.dnd_until > (time.time() if now is None else now)


class PreferenceService:
    """Preferences (GET/PATCH), chat mutes, and the cached answers delivery needs."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, max_muted_types: int = 50, *,
                 on_share_presence: Optional[Callable[[int, bool], Awaitable[None]]] = None):
        self.dbx = dbx
        self.hub = hub
        self.max_muted_types = max_muted_types
        self._users: "OrderedDict[int, UserPrefs]" = OrderedDict()
        self._data: Dict[int, dict] = {}  # the JSON view of the cached users (same keys as _users)
        self._mutes: "OrderedDict[int, Dict[int, float]]" = OrderedDict()
        self._generation = 0  # bumped by every forget: a load that overlapped one is not cached
        # Cache misses of the moment share one read (a publish to one user per request, each a
        # miss the first time: one read for all the requests in flight, not one each).
        self._loads: Batcher[List[int], Tuple[dict, dict]] = Batcher(
            self._load, name="preferences.load", max_batch=LOAD_BATCH, weight=len)
        self.loads = 0  # reads of uncached preferences so far (tests check that lookups share them)
        # ``(user_id, shares)`` when a user turns share_presence on or off (issue 25): the presence
        # service tells their co-members at once. None: nobody listens (tests of preferences alone).
        self.on_share_presence = on_share_presence

    # The cached answers ---------------------------------------------------------------------

    def cached(self, user_id: int) -> Optional[UserPrefs]:
        """The cached preferences of ``user_id`` (None when not loaded yet)."""
        return self._users.get(user_id)

    async def many(self, user_ids: Iterable[int]) -> Dict[int, UserPrefs]:
        """Preferences of ``user_ids``: from the cache, one query for those not cached."""
        out, missing = {}, []
        for uid in user_ids:
            prefs = self._users.get(uid)
            if prefs is None:
                missing.append(uid)
            else:
                out[uid] = prefs
        if missing:
            generation = self._generation
            data, subs = await self._loads.submit(missing)
            for uid in missing:
                if generation == self._generation:
                    out[uid] = self._remember(uid, data[uid], subs.get(uid, 0))
                else:  # something changed while we read: answer, but do not cache what may be stale
                    out[uid] = UserPrefs(data[uid], subs.get(uid, 0))
        return out

    async def _load(self, batch: List[List[int]]) -> List[Tuple[dict, dict]]:
        """One read for the misses of every lookup in ``batch``; each lookup gets the whole answer."""
        wanted = list(dict.fromkeys(uid for user_ids in batch for uid in user_ids))
        self.loads += 1
        answer = await self.dbx.read(store.load_users, wanted, DEFAULTS)
        return [answer] * len(batch)

    async def broadcast_exceptions(self, ntype: str) -> Tuple[List[int], List[int]]:
        """``(muted, quiet)``: users who muted ``ntype``, and the others in Do Not Disturb now.

        A broadcast is one row for everyone, so these are the users it must treat apart, as
        a targeted notification would: skip the first, mark it silent for the second. One
        read of the preferences that could matter (the rest are defaults).
        """
        now = time.time()
        muted, quiet = [], []
        for uid, raw in await self.dbx.read(store.broadcast_candidates, ntype):
            prefs = UserPrefs({**DEFAULTS, **json.loads(raw)}, 0)
            if ntype in prefs.muted_types:
                muted.append(uid)
            elif prefs.dnd(now):
                quiet.append(uid)
        return muted, quiet

    async def get(self, user_id: int) -> UserPrefs:
        """Preferences of one user (cached)."""
        return (await self.many([user_id]))[user_id]

    def _remember(self, user_id: int, data: dict, subscriptions: int) -> UserPrefs:
        prefs = UserPrefs(data, subscriptions)
        self._users[user_id] = prefs
        self._data[user_id] = data
        self._users.move_to_end(user_id)
        while len(self._users) > CACHE_USERS:
            old, _ = self._users.popitem(last=False)
            self._data.pop(old, None)
        return prefs

    def forget(self, user_id: int) -> None:
        """Drop ``user_id`` from the cache (it changed somewhere)."""
        self._generation += 1
        self._users.pop(user_id, None)
        self._data.pop(user_id, None)

    def mutes_cached(self, chat_id: int) -> Optional[Dict[int, float]]:
        """``{user_id: muted until}`` of ``chat_id`` when cached (expired entries may remain)."""
        mutes = self._mutes.get(chat_id)
        if mutes is not None:
            self._mutes.move_to_end(chat_id)
        return mutes

    async def chat_mutes(self, chat_id: int) -> Dict[int, float]:
        """``{user_id: muted until (epoch s)}`` of ``chat_id`` (one query the first time)."""
        mutes = self.mutes_cached(chat_id)
        if mutes is not None:
            return mutes
        rows = await self.dbx.read(store.chat_mutes, chat_id)
        mutes = self._mutes.get(chat_id)  # a change may have arrived meanwhile: keep it
        if mutes is None:
            mutes = {uid: epoch(until) for uid, until in rows}
            self._mutes[chat_id] = mutes
            while len(self._mutes) > CACHE_CHATS:
                self._mutes.popitem(last=False)
        return mutes

    @staticmethod
    def is_muted(mutes: Dict[int, float], user_id: int, now: float) -> bool:
        """True when ``mutes`` (of one chat) has ``user_id`` muted at ``now``."""
        until = mutes.get(user_id)
        return until is not None and until > now

    # Preferences API ------------------------------------------------------------------------

    async def preferences(self, user_id: int) -> dict:
        """The JSON preferences of ``user_id`` (every field, defaults filled in)."""
        await self.get(user_id)
        data = self._data.get(user_id)
        if data is None:  # evicted between the two lines above
            data = (await self.dbx.read(store.load_users, [user_id], DEFAULTS))[0][user_id]
        return self._public(data)

    @staticmethod
    def _public(data: dict) -> dict:
        out = dict(data)
        until = parse_time(out["dnd_until"], "dnd_until") if out["dnd_until"] else None
        out["dnd_until"] = iso(until) if until is not None and until > utcnow() else None
        return out

    def validate(self, patch) -> dict:
        """The checked fields of a PATCH body. Raises ValidationError naming the first bad field."""
        if not isinstance(patch, dict):
            raise ValidationError("the body must be a JSON object")
        unknown = [k for k in patch if k not in DEFAULTS]
        if unknown:
            raise ValidationError(f"unknown preference {str(unknown[0])[:40]!r}", "invalid_preference")
        out = {}
        for name in ("sound", "toasts", "push", "share_presence"):
            if name in patch:
                if not isinstance(patch[name], bool):
                    raise ValidationError(f"'{name}' must be true or false", "invalid_preference")
                out[name] = patch[name]
        if "dnd_until" in patch:
            until = parse_time(patch["dnd_until"], "dnd_until")
            out["dnd_until"] = None if until is None else iso(until)
        if "muted_types" in patch:
            types = patch["muted_types"]
            if not isinstance(types, list) or len(types) > self.max_muted_types:
                raise ValidationError(f"'muted_types' must be a list of at most {self.max_muted_types} types",
                                      "invalid_preference")
            for t in types:
                if not isinstance(t, str) or not TYPE_RE.match(t):
                    raise ValidationError("each of 'muted_types' must be 1-64 of A-Z a-z 0-9 _ . : -",
                                          "invalid_preference")
                if t in RESERVED_TYPES:
                    raise ValidationError("'new_message' cannot be muted: mute chats instead", "invalid_preference")
            out["muted_types"] = sorted(set(types))
        return out

    async def update(self, user_id: int, patch) -> dict:
        """Merge ``patch`` into the preferences of ``user_id``; every stream of the user hears of it.

        Raises ValidationError.
        """
        changes = self.validate(patch)
        before = await self.get(user_id)
        subscriptions = before.subscriptions
        data = await self.dbx.write(store.merge_preferences, user_id, changes, DEFAULTS)
        self._remember(user_id, data, subscriptions)
        await self.hub.control(PreferencesChanged(user_id))
        public = self._public(data)
        await self.hub.publish(NOTIFY, (user_id,), dumps({"type": "preferences", **public}))
        if self.on_share_presence is not None and data.get("share_presence", True) != before.share_presence:
            await self.on_share_presence(user_id, data.get("share_presence", True))
        return public

    # Chat mutes -----------------------------------------------------------------------------

    async def set_mute(self, user_id: int, chat_id: int, until: Optional[datetime.datetime]) -> dict:
        """Mute ``chat_id`` for ``user_id`` until ``until`` (None: until unmuted; a past time unmutes).

        The caller checked membership. Tells every stream of the user (``mute`` event and a
        fresh ``unread``), and every process's cache.
        """
        stored = FOREVER if until is None else until
        await self.dbx.write(store.set_muted_until, user_id, chat_id, stored)
        return await self._changed(user_id, chat_id, epoch(stored))

    async def clear_mute(self, user_id: int, chat_id: int) -> dict:
        """Unmute ``chat_id`` for ``user_id``."""
        await self.dbx.write(store.set_muted_until, user_id, chat_id, None)
        return await self._changed(user_id, chat_id, 0.0)

    async def _changed(self, user_id: int, chat_id: int, until: float) -> dict:
        await self.hub.control(ChatMuteChanged(chat_id, user_id, until))  # here at once, then everywhere
        state = mute_state(until)
        await self.hub.publish(NOTIFY, (user_id,), dumps({"type": "mute", "chat_id": chat_id, **state}))
        # the red dot counts this chat again (or no longer)
        await self.hub.publish(NOTIFY, (user_id,), (await self.dbx.read(unread_states, [user_id]))[user_id])
        return {"chat_id": chat_id, **state}

    # Control messages from any process (ControlDispatch) --------------------------------------

    def on_preferences_changed(self, message: PreferencesChanged) -> None:
        """Forget the user's cached preferences (read again on next use)."""
        self.forget(message.user_id)

    def on_subscriptions_changed(self, message: SubscriptionsChanged) -> None:
        """Forget the user's cached preferences, which count its push subscriptions."""
        self.forget(message.user_id)

    def on_chat_mute_changed(self, message: ChatMuteChanged) -> None:
        """Update the cached mutes of the chat (when cached)."""
        mutes = self._mutes.get(message.chat_id)
        if mutes is not None:
            if message.until > time.time():
                mutes[message.user_id] = message.until
            else:
                mutes.pop(message.user_id, None)

    def subscriptions_changed(self, user_id: int, count: int) -> None:
        """This process changed the push subscriptions of ``user_id``: ``count`` remain."""
        prefs = self._users.get(user_id)
        if prefs is not None:
            prefs.subscriptions = count


def mute_state(until: float, now: Optional[float] = None) -> dict:
    """``{"muted", "muted_until"}`` of a chat member from its muted-until epoch (0: not muted)."""
    now = time.time() if now is None else now
    if until <= now:
        return {"muted": False, "muted_until": None}
    if until >= FOREVER_TS:
        return {"muted": True, "muted_until": None}
    ends = datetime.datetime.fromtimestamp(until, datetime.timezone.utc).replace(tzinfo=None)
    return {"muted": True, "muted_until": iso(ends)}


def mute_state_of(value) -> dict:
    """``mute_state`` of a stored ``muted_until`` (datetime, SQLite text or None)."""
    if value is None:
        return {"muted": False, "muted_until": None}
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return mute_state(epoch(value))
