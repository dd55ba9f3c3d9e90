"""Chats and their members' storage: creating chats, membership, departures, group changes.

Every statement of ``ChatService``'s membership and chat creation (``service.py``) and of
``GroupService`` (``groups.py``) lives here, called on a database thread (the writes inside the
transaction ``DatabaseExecutor.write`` opens). A group change is one transaction: the caller's
role read from the database, the change, and its system message, stored by the one path that
stores every message (``store.store_sends``, a batch of one: the same counters, unread and
read positions, and last message as any send; no notification and no webhook, as
docs/protocol.md "System messages" says). A removed member keeps a ``chat_departure`` row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import peewee

from models import (ADMIN, GROUP, MEMBER, OWNER, PRIVATE, SYSTEM_MESSAGE, Chat, ChatDeparture, ChatMember,
                    tuples, utcnow)
from ...errors import Conflict, Forbidden, NotFound, ValidationError
from ..delivery.notification_store import unread_states
from ..storage.sql import quote, select_in
from .store import SendRequest, store_sends

# Peewee's implicit ids, typed Any: its stubs do not know them
CHAT_ID: Any = Chat._meta.primary_key
MEMBER_ID: Any = ChatMember._meta.primary_key


def _all(query: Any) -> List[Any]:
    """A query's rows (model instances or tuples), typed as Any: Peewee's attributes are dynamic."""
    return list(query)


def _member_ids(chat_id: int) -> List[int]:
    return [uid for (uid,) in _all(ChatMember.select(ChatMember.user).where(ChatMember.chat == chat_id).tuples())]


@dataclass
class Change:
    """What one committed group change produced (writer thread → loop)."""

    chat_id: int
    message: dict  # the system message, as ``message_dict`` shapes it
    added: List[int] = field(default_factory=list)
    removed: List[int] = field(default_factory=list)
    roles: Dict[int, str] = field(default_factory=dict)  # user id -> new role
    title: Optional[str] = None
    removed_at_message_id: Optional[int] = None
    unread: Dict[int, str] = field(default_factory=dict)  # unread frames of the members whose counts moved


# Members ---------------------------------------------------------------------------------

def member_ids(chat_id: int) -> Optional[Tuple[int, ...]]:
    """The member ids of ``chat_id``, sorted; None when the chat does not exist. Database thread."""
    if not Chat.select().where(Chat.id == chat_id).exists():
        return None
    return tuple(uid for (uid,) in tuples(ChatMember.select(ChatMember.user)
                                          .where(ChatMember.chat == chat_id).order_by(ChatMember.user)))


def change_members(chat_id: int, add: Set[int], remove: Set[int], limit: int) -> Tuple[List[int], List[int]]:
    """Add ``add`` to and remove ``remove`` from group ``chat_id`` (writer thread): ``(added, removed)``.

    Raises NotFound ``chat_not_found``, Conflict ``not_a_group``, ValidationError ``too_many_members``.
    """
    chat = Chat.get_or_none(Chat.id == chat_id)
    if chat is None:
        raise NotFound(f"Chat {chat_id} does not exist", "chat_not_found")
    if chat.kind != GROUP:
        raise Conflict(f"Chat {chat_id} is a private chat: its members never change", "not_a_group")
    current = {uid for (uid,) in tuples(ChatMember.select(ChatMember.user).where(ChatMember.chat == chat_id))}
    added, removed = sorted(add - current), sorted(remove & current)
    if len(current) + len(added) - len(removed) > limit:
        raise ValidationError(f"A group chat has at most {limit} members", "too_many_members")
    if removed:
        owner_removed = ChatMember.select().where((ChatMember.chat == chat_id) & ChatMember.user.in_(removed)
                                                  & (ChatMember.role == OWNER)).exists()
        ChatMember.delete().where((ChatMember.chat == chat_id) & ChatMember.user.in_(removed)).execute()
        # They keep the history up to now, and a removed owner passes the group on (issue 25).
        record_departures(chat_id, removed, chat.last_message_id or 0)
        if owner_removed:
            succeed_owner(chat_id)
    if added:
        read_to = chat.last_message_id or 0
        ChatMember.insert_many([{"chat": chat_id, "user": uid, "last_read_message_id": read_to}
                                for uid in added]).on_conflict_ignore().execute()
        forget_departures(chat_id, added)
    return added, removed


# Chats -------------------------------------------------------------------------------------

def private_chat(key: str, user_ids: List[int]) -> int:
    """The id of the private chat ``key`` of ``user_ids``, created on first use (writer thread)."""
    chat = Chat.get_or_none(Chat.private_key == key)
    if chat is None:
        try:
            with Chat._meta.database.atomic():
                chat = Chat.create(kind=PRIVATE, private_key=key)
                ChatMember.insert_many([{"chat": chat.id, "user": u} for u in sorted(set(user_ids))]).execute()
        except peewee.IntegrityError:  # created meanwhile by another process
            chat = Chat.get(Chat.private_key == key)
    return chat.id


def create_group(owner_id: int, member_ids: List[int], title: str) -> int:
    """A new group titled ``title`` of ``member_ids``, owned by ``owner_id`` (writer thread): its id."""
    chat = Chat.create(kind=GROUP, title=title)
    ChatMember.insert_many([{"chat": chat.id, "user": u, "role": OWNER if u == owner_id else "member"}
                            for u in member_ids]).execute()
    return chat.id


def _role_of(chat_id: int, user_id: int) -> Optional[str]:
    row = ChatMember.select(ChatMember.role).where(
        (ChatMember.chat == chat_id) & (ChatMember.user == user_id)).tuples().first()
    return row[0] if row else None


def _group(chat_id: int) -> Chat:
    chat = Chat.get_or_none(CHAT_ID == chat_id)
    if chat is None:
        raise NotFound(f"Chat {chat_id} does not exist", "chat_not_found")
    if chat.kind != GROUP:
        raise Conflict(f"Chat {chat_id} is a private chat: it never changes", "not_a_group")
    return chat


def _actor_role(chat_id: int, user_id: int) -> str:
    role = _role_of(chat_id, user_id)
    if role is None:
        raise Forbidden(f"You are not a member of chat {chat_id}", "not_a_member")
    return role


def _refuse(what: str) -> Forbidden:
    return Forbidden(f"Your role in this group does not allow you to {what}", "insufficient_role")


def record_departures(chat_id: int, user_ids: List[int], last_message_id: int) -> None:
    """Remember removed members and the last message they may read (writer thread, in the removal's transaction)."""
    now = utcnow()
    for uid in user_ids:
        ChatDeparture.insert(chat=chat_id, user=uid, last_message_id=last_message_id, left_at=now).on_conflict(
            conflict_target=[ChatDeparture.user, ChatDeparture.chat],
            update={ChatDeparture.last_message_id: last_message_id, ChatDeparture.left_at: now}).execute()


def forget_departures(chat_id: int, user_ids: List[int]) -> None:
    """Members added (back): they read the whole history again as members (writer thread)."""
    if user_ids:
        ChatDeparture.delete().where((ChatDeparture.chat == chat_id) & ChatDeparture.user.in_(user_ids)).execute()


def succeed_owner(chat_id: int) -> Optional[int]:
    """Give an ownerless group that had one a new owner: the earliest admin, else the earliest member.

    Call after removing the owner (writer thread). Returns the new owner's id, or None.
    """
    if ChatMember.select().where((ChatMember.chat == chat_id) & (ChatMember.role == OWNER)).exists():
        return None
    heir: Any = (ChatMember.select(MEMBER_ID, ChatMember.user).where(ChatMember.chat == chat_id)
                 .order_by((ChatMember.role != ADMIN), MEMBER_ID).first())
    if heir is None:
        return None
    ChatMember.update(role=OWNER).where(MEMBER_ID == heir.id).execute()
    return heir.user_id


def former_limit(user_id: int, chat_id: int) -> Optional[int]:
    """The last message id a former member of ``chat_id`` may read; None if they never left it (reader thread)."""
    row = ChatDeparture.select(ChatDeparture.last_message_id).where(
        (ChatDeparture.chat == chat_id) & (ChatDeparture.user == user_id)).tuples().first()
    return row[0] if row else None


# Group changes -----------------------------------------------------------------------------

def store_system(chat_id: int, actor_id: int, actor_name: str, text: str, data: dict, readers: List[int],
                 unread: bool = True) -> Tuple[dict, Dict[int, str]]:
    """Store a system message from ``actor_id`` (writer thread, in the change's transaction).

    Through ``store_sends`` like any message: unread +1 for the members but the actor and
    ``readers`` (who have read it: the members it adds, the one it removes), the chat's last
    message. Returns its public shape and, with ``unread``, the unread frames of the members.
    Raises what the store answered when it could not store it (the change rolls back).
    """
    others = [uid for uid in _member_ids(chat_id) if uid != actor_id]
    req = SendRequest(chat_id=chat_id, sender_id=actor_id, sender_name=actor_name, content=text,
                      message_type=SYSTEM_MESSAGE, client_id=None, notify_ids=[], others=others,
                      system=data, readers=tuple(readers))
    (outcome,), frames = store_sends([req], None if unread else set())
    if isinstance(outcome, Exception):
        raise outcome
    return outcome.message, frames


def rename(user_id: int, chat_id: int, actor: dict, title: str) -> Optional[Change]:
    """Set the title of group ``chat_id`` (owner, admin) and store its system message; None when
    it had that title already. Raises NotFound, Conflict ``not_a_group``, Forbidden."""
    chat = _group(chat_id)
    if _actor_role(chat_id, user_id) not in (OWNER, ADMIN):
        raise _refuse("change the title")
    if chat.title == title:
        return None
    Chat.update(title=title).where(CHAT_ID == chat_id).execute()
    message, frames = store_system(chat_id, user_id, actor["display_name"],
                                     f"{actor['display_name']} renamed the group to {title}",
                                     {"action": "renamed", "actor_id": user_id, "title": title}, [])
    return Change(chat_id, message, title=title, unread=frames)


def add_member(user_id: int, chat_id: int, actor: dict, new_id: int, added: dict, limit: int) -> Change:
    """Add ``new_id`` to group ``chat_id`` (owner, admin) as a member, and the system message.

    Raises NotFound, Conflict (``not_a_group``, ``already_a_member``), Forbidden,
    ValidationError ``too_many_members`` (the group has ``limit`` members).
    """
    _group(chat_id)
    if _actor_role(chat_id, user_id) not in (OWNER, ADMIN):
        raise _refuse("add members")
    if _role_of(chat_id, new_id) is not None:
        raise Conflict(f"User {new_id} is already a member of chat {chat_id}", "already_a_member")
    if ChatMember.select().where(ChatMember.chat == chat_id).count() >= limit:
        raise ValidationError(f"A group chat has at most {limit} members", "too_many_members")
    ChatMember.insert(chat=chat_id, user=new_id, role=MEMBER).execute()
    forget_departures(chat_id, [new_id])
    message, frames = store_system(
        chat_id, user_id, actor["display_name"], f"{actor['display_name']} added {added['display_name']}",
        {"action": "added", "actor_id": user_id, "user_ids": [new_id]}, [new_id])
    return Change(chat_id, message, added=[new_id], roles={new_id: MEMBER}, unread=frames)


def remove_member(user_id: int, chat_id: int, actor: dict, target_id: int, target: dict) -> Change:
    """Remove ``target_id`` from group ``chat_id`` (``target_id == user_id``: leaving), with the
    system message, their departure and a new owner when the owner goes.

    Raises NotFound ``member_not_found``, Conflict ``not_a_group``, Forbidden.
    """
    leaving = target_id == user_id
    _group(chat_id)
    role = _actor_role(chat_id, user_id)
    target_role = _role_of(chat_id, target_id)
    if target_role is None:
        raise NotFound(f"User {target_id} is not a member of chat {chat_id}", "member_not_found")
    if not leaving and not (role == OWNER or (role == ADMIN and target_role == MEMBER)):
        raise _refuse("remove this member")
    if leaving:
        text, data = (f"{actor['display_name']} left",
                      {"action": "left", "actor_id": user_id, "user_ids": [user_id]})
    else:
        text, data = (f"{actor['display_name']} removed {target['display_name']}",
                      {"action": "removed", "actor_id": user_id, "user_ids": [target_id]})
    # Stored while the target is still a member: it is the last message they may read.
    message, _ = store_system(chat_id, user_id, actor["display_name"], text, data, [target_id], unread=False)
    ChatMember.delete().where((ChatMember.chat == chat_id) & (ChatMember.user == target_id)).execute()
    record_departures(chat_id, [target_id], message["id"])
    roles: Dict[int, str] = {}
    if target_role == OWNER:
        heir = succeed_owner(chat_id)
        if heir is not None:
            roles[heir] = OWNER
    touched = _member_ids(chat_id)
    return Change(chat_id, message, removed=[target_id], roles=roles, removed_at_message_id=message["id"],
                  unread=unread_states([*touched, target_id]))


def set_role(user_id: int, chat_id: int, actor: dict, target_id: int, target: dict, role: str) -> Optional[Change]:
    """Give ``target_id`` the ``role`` (the owner only; ``owner`` transfers, the old owner becomes
    an admin), with the system message; None when they had it. Raises NotFound, Conflict, Forbidden."""
    _group(chat_id)
    if _actor_role(chat_id, user_id) != OWNER:
        raise _refuse("change roles")
    current = _role_of(chat_id, target_id)
    if current is None:
        raise NotFound(f"User {target_id} is not a member of chat {chat_id}", "member_not_found")
    if current == role:
        return None
    roles = {target_id: role}
    ChatMember.update(role=role).where((ChatMember.chat == chat_id) & (ChatMember.user == target_id)).execute()
    if role == OWNER:
        ChatMember.update(role=ADMIN).where(
            (ChatMember.chat == chat_id) & (ChatMember.user == user_id)).execute()
        roles[user_id] = ADMIN
        text = f"{actor['display_name']} made {target['display_name']} the owner"
    elif role == ADMIN:
        text = f"{actor['display_name']} made {target['display_name']} an admin"
    else:
        text = f"{actor['display_name']} made {target['display_name']} a member"
    message, frames = store_system(chat_id, user_id, actor["display_name"], text,
                                     {"action": "role", "actor_id": user_id, "user_ids": [target_id],
                                      "role": role}, [])
    return Change(chat_id, message, roles=roles, unread=frames)


# Presence (issue 25, ``presence.py``): who shares a chat with whom ----------------------------

def co_members(user_id: int) -> List[int]:
    """Everyone who shares a chat with ``user_id``."""
    chats = ChatMember.select(ChatMember.chat).where(ChatMember.user == user_id)
    return [uid for (uid,) in tuples(ChatMember.select(ChatMember.user).distinct()
            .where(ChatMember.chat.in_(chats) & (ChatMember.user != user_id)))]


def shared_with(viewer: int, user_ids: List[int]) -> Set[int]:
    """Which of ``user_ids`` share a chat with ``viewer``."""
    if not user_ids:
        return set()
    chats = ChatMember.select(ChatMember.chat).where(ChatMember.user == viewer)
    return {uid for (uid,) in tuples(ChatMember.select(ChatMember.user).distinct()
            .where(ChatMember.chat.in_(chats) & ChatMember.user.in_(user_ids)))}


def sharing_pairs(user_ids: List[int]) -> List[Tuple[int, int]]:
    """``(user, co-member)`` once per pair, for each of ``user_ids`` and everyone who shares a chat with
    them: the statement written out, its id list widened per chunk (Peewee would build it a parameter
    at a time, which for a presence batch of hundreds of users costs more than the query)."""
    table, user, chat = (quote(ChatMember._meta.table_name), quote(ChatMember.user.column_name),
                         quote(ChatMember.chat.column_name))
    sql = (f"SELECT DISTINCT s.{user}, v.{user} FROM {table} AS s JOIN {table} AS v ON v.{chat} = s.{chat} "
           f"WHERE s.{user} IN ({{}}) AND v.{user} <> s.{user}")
    return [(a, b) for a, b in select_in(ChatMember, sql, user_ids)]
