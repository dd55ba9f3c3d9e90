"""The preferences aggregate's storage: a user's preferences, push subscription counts, chat mutes.

Every statement ``PreferenceService`` (``preferences.py``) runs lives here, called on a
database thread (the writes inside the transaction ``DatabaseExecutor.write`` opens). A user's
preferences are one JSON row (``user_preference``) holding only what differs from the
defaults the service passes in; a chat mute is the member's ``chat_member.muted_until``.
"""
from __future__ import annotations

import datetime
import json
from typing import Dict, List, Mapping, Optional, Set, Tuple

import peewee

from models import ChatMember, PushSubscription, UserPreference, tuples, utcnow
from .events import dumps


def load_users(user_ids: List[int], defaults: Mapping[str, object]
               ) -> Tuple[Dict[int, Dict[str, object]], Dict[int, int]]:
    """``(preferences, push subscription counts)`` of ``user_ids``: every field, ``defaults`` filled in."""
    data = {uid: dict(defaults) for uid in user_ids}
    for uid, raw in tuples(UserPreference.select(UserPreference.user, UserPreference.data).where(
            UserPreference.user.in_(user_ids))):
        data[uid].update(json.loads(raw))
    subs: Dict[int, int] = dict(tuples(
        PushSubscription.select(PushSubscription.user, peewee.fn.COUNT(PushSubscription.id))
        .where(PushSubscription.user.in_(user_ids)).group_by(PushSubscription.user)))
    return data, subs


def broadcast_candidates(ntype: str) -> List[Tuple[int, str]]:
    """``(user id, stored JSON)`` of the users whose preferences may matter to a broadcast of ``ntype``.

    A coarse text filter (a Do Not Disturb time, or the type's name); the caller's JSON
    decides (a type may contain LIKE's ``_``).
    """
    query = UserPreference.select(UserPreference.user, UserPreference.data).where(
        UserPreference.data.contains('"dnd_until":"') | UserPreference.data.contains(dumps(ntype)))
    return list(tuples(query))


def hiding_presence(user_ids: List[int]) -> Set[int]:
    """Which of ``user_ids`` turned ``share_presence`` off (presence, issue 25).

    Only the rows that mention it are read (no row, or none of it, means the default: shared);
    their JSON decides.
    """
    return {uid for uid, raw in tuples(UserPreference.select(UserPreference.user, UserPreference.data).where(
        UserPreference.user.in_(user_ids) & UserPreference.data.contains("share_presence")))
        if json.loads(raw).get("share_presence") is False}


def merge_preferences(user_id: int, changes: Mapping[str, object], defaults: Mapping[str, object]) -> dict:
    """Store ``changes`` over the preferences of ``user_id`` (writer thread); every field after it."""
    row = UserPreference.get_or_none(UserPreference.user == user_id)
    data = dict(defaults)
    if row is not None:
        data.update(json.loads(row.data))
    data.update(changes)
    (UserPreference.insert(user=user_id, data=dumps(data), updated_at=utcnow())
     .on_conflict(conflict_target=[UserPreference.user],
                  update={UserPreference.data: dumps(data), UserPreference.updated_at: utcnow()})
     .execute())
    return data


def chat_mutes(chat_id: int) -> List[Tuple[int, datetime.datetime]]:
    """``(user id, muted until)`` of the members of ``chat_id`` muting it now (reader thread)."""
    now = utcnow()
    return list(tuples(ChatMember.select(ChatMember.user, ChatMember.muted_until).where(
        (ChatMember.chat == chat_id) & (ChatMember.muted_until > now))))


def set_muted_until(user_id: int, chat_id: int, until: Optional[datetime.datetime]) -> None:
    """Mute ``chat_id`` for its member ``user_id`` until ``until`` (None: not muted; writer thread)."""
    ChatMember.update(muted_until=until).where((ChatMember.chat == chat_id) & (ChatMember.user == user_id)).execute()
