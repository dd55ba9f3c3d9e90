"""Groups that change (issue 25): title, members, roles, leaving, and the system messages they store.

Rights (docs/protocol.md "Groups that change" has the same table):

    action                       owner   admin            member
    change the title             yes     yes              no
    add a member                 yes     yes              no
    remove a member              yes     members only     no
    make admin / member          yes     no               no
    transfer ownership           yes     no               no
    leave                        yes     yes              yes

Private chats never change (409 ``not_a_group``). Groups made by the service API have no
owner: their members can only leave; the product changes them (``ChatService.change_members``).

Flow of a change: one transaction (the caller's role read from the database, the change, its
system message, counters) → ``ChatService.members_changed`` for a change of members (every
process drops its cached member list and closes the chat's events to removed members at once)
→ the system ``message``, ``members`` / ``chat_updated`` events and ``unread`` states.

A removed member keeps a ``chat_departure`` row: history and search show them the chat up to
and including the system message of their removal, and nothing after it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from models import (ADMIN, GROUP, MEMBER, OWNER, SYSTEM_MESSAGE, Chat, ChatDeparture, ChatMember, Message,
                    utcnow)
from ...errors import Conflict, Forbidden, NotFound, RateLimited, ValidationError
from ..delivery.events import CHAT, dumps, iso
from ..delivery.notification_store import unread_states
from ..delivery.notifications import NotificationService
from ..identity.users import UserService
from ..operations.ratelimit import RateLimiter
from ..storage.db import DatabaseExecutor
from ..storage.ids import require_id
from .shape import message_shape

ROLES = (OWNER, ADMIN, MEMBER)
MAX_TITLE = 128
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


def _store_system(chat_id: int, actor_id: int, actor_name: str, text: str, data: dict,
                  readers: List[int]) -> Tuple[dict, List[int]]:
    """Store a system message from ``actor_id``; unread +1 for the other members. Writer thread.

    ``readers`` (besides the actor) have read it already: the members it adds.
    Returns the message's public shape and the members whose unread count moved.
    """
    now = utcnow()
    system = json.dumps(data, separators=(",", ":"))
    mid = Message.insert(chat=chat_id, sender=actor_id, content=text, message_type=SYSTEM_MESSAGE,
                         system=system, created_at=now).execute()
    skip = [actor_id, *readers]
    ChatMember.update(unread_count=ChatMember.unread_count + 1).where(
        (ChatMember.chat == chat_id) & ChatMember.user.not_in(skip)).execute()
    ChatMember.update(last_read_message_id=mid, unread_count=0).where(
        (ChatMember.chat == chat_id) & ChatMember.user.in_(skip)).execute()
    Chat.update(last_message_id=mid, last_activity_at=now).where(CHAT_ID == chat_id).execute()
    touched = _member_ids(chat_id)
    message = message_shape(mid, chat_id, actor_id, actor_name, text, SYSTEM_MESSAGE, None, iso(now) or "",
                            system=data)
    return message, touched


class GroupService:
    """Title, members and roles of group chats changed by their members, within their rights."""

    def __init__(self, dbx: DatabaseExecutor, chat, users: UserService, notifications: NotificationService,
                 changes_per_minute: int = 20):
        self.dbx = dbx
        self.chat = chat  # ChatService: members_changed, limits, hub, chat_summary
        self.users = users
        self.notifications = notifications
        self.changes_per_minute = changes_per_minute
        # per user, burst as large (--group-changes-per-minute); leaving is never limited
        self._limiter = RateLimiter(changes_per_minute / 60.0, changes_per_minute)

    def _allow(self, user_id: int) -> None:
        if not self._limiter.allow(user_id):
            raise RateLimited(f"At most {self.changes_per_minute} group changes per minute",
                              retry_after=self._limiter.retry_after(user_id))

    async def rename(self, user_id: int, chat_id, title) -> dict:
        """Set the title of group ``chat_id`` (owner, admin); returns the chat summary.

        Raises ValidationError ``invalid_title``, NotFound, Conflict ``not_a_group``, Forbidden
        (``not_a_member``, ``insufficient_role``), RateLimited.
        """
        chat_id = require_id(chat_id, "chat_id")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise ValidationError(f"'title' must be a non-empty string of at most {MAX_TITLE} characters",
                                  "invalid_title")
        title = title.strip()
        self._allow(user_id)
        actor = await self.users.get(user_id)

        def apply() -> Optional[Change]:
            chat = _group(chat_id)
            if _actor_role(chat_id, user_id) not in (OWNER, ADMIN):
                raise _refuse("change the title")
            if chat.title == title:
                return None
            Chat.update(title=title).where(CHAT_ID == chat_id).execute()
            message, touched = _store_system(chat_id, user_id, actor["display_name"],
                                             f"{actor['display_name']} renamed the group to {title}",
                                             {"action": "renamed", "actor_id": user_id, "title": title}, [])
            return Change(chat_id, message, title=title, unread=unread_states(touched))

        change = await self.dbx.write(apply)
        if change is not None:
            await self._announce(change)
        return await self.chat.chat_summary(user_id, chat_id)

    async def add_member(self, user_id: int, chat_id, new_id) -> dict:
        """Add ``new_id`` to group ``chat_id`` (owner, admin) as a member; returns the chat summary.

        Raises ValidationError (``too_many_members``), NotFound (``chat_not_found``, ``user_not_found``),
        Conflict (``not_a_group``, ``already_a_member``), Forbidden, RateLimited.
        """
        chat_id = require_id(chat_id, "chat_id")
        new_id = require_id(new_id, "user_id")
        self._allow(user_id)
        people = await self.users.get_many([user_id, new_id])
        if new_id not in people:
            raise NotFound(f"User {new_id} does not exist", "user_not_found")
        actor, added = people[user_id], people[new_id]
        limit = self.chat.limits.max_group_members

        def apply() -> Change:
            _group(chat_id)
            if _actor_role(chat_id, user_id) not in (OWNER, ADMIN):
                raise _refuse("add members")
            if _role_of(chat_id, new_id) is not None:
                raise Conflict(f"User {new_id} is already a member of chat {chat_id}", "already_a_member")
            if ChatMember.select().where(ChatMember.chat == chat_id).count() >= limit:
                raise ValidationError(f"A group chat has at most {limit} members", "too_many_members")
            ChatMember.insert(chat=chat_id, user=new_id, role=MEMBER).execute()
            forget_departures(chat_id, [new_id])
            message, touched = _store_system(
                chat_id, user_id, actor["display_name"], f"{actor['display_name']} added {added['display_name']}",
                {"action": "added", "actor_id": user_id, "user_ids": [new_id]}, [new_id])
            return Change(chat_id, message, added=[new_id], roles={new_id: MEMBER}, unread=unread_states(touched))

        await self._announce(await self.dbx.write(apply))
        return await self.chat.chat_summary(user_id, chat_id)

    async def remove_member(self, user_id: int, chat_id, target_id) -> dict:
        """Remove ``target_id`` from group ``chat_id``; ``target_id == user_id`` is leaving (anyone).

        Owner: anyone; admin: members only. When the owner leaves, the earliest admin (else
        the earliest member) becomes the owner. Returns ``{"chat_id", "user_id",
        "removed_at_message_id"}``. Raises NotFound (``chat_not_found``, ``member_not_found``),
        Conflict ``not_a_group``, Forbidden, RateLimited (not for leaving).
        """
        chat_id = require_id(chat_id, "chat_id")
        target_id = require_id(target_id, "user_id")
        leaving = target_id == user_id
        if not leaving:
            self._allow(user_id)
        people = await self.users.get_many([user_id, target_id])
        actor = people.get(user_id, {"display_name": ""})
        target = people.get(target_id, {"display_name": ""})

        def apply() -> Change:
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
            message, _ = _store_system(chat_id, user_id, actor["display_name"], text, data, [target_id])
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

        change = await self.dbx.write(apply)
        await self._announce(change)
        return {"chat_id": chat_id, "user_id": target_id, "removed_at_message_id": change.removed_at_message_id}

    async def set_role(self, user_id: int, chat_id, target_id, role) -> dict:
        """Make ``target_id`` ``admin`` or ``member``, or transfer ownership (``owner``): the owner only.

        Transferring makes the old owner an admin. Returns the chat summary. Raises
        ValidationError ``invalid_role``, NotFound, Conflict ``not_a_group``, Forbidden, RateLimited.
        """
        chat_id = require_id(chat_id, "chat_id")
        target_id = require_id(target_id, "user_id")
        if role not in ROLES:
            raise ValidationError("'role' must be one of owner, admin, member", "invalid_role")
        if target_id == user_id:
            raise ValidationError("Change the role of another member (an owner transfers ownership)",
                                  "invalid_role")
        self._allow(user_id)
        people = await self.users.get_many([user_id, target_id])
        actor = people.get(user_id, {"display_name": ""})
        target = people.get(target_id, {"display_name": ""})

        def apply() -> Optional[Change]:
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
            message, touched = _store_system(chat_id, user_id, actor["display_name"], text,
                                             {"action": "role", "actor_id": user_id, "user_ids": [target_id],
                                              "role": role}, [])
            return Change(chat_id, message, roles=roles, unread=unread_states(touched))

        change = await self.dbx.write(apply)
        if change is not None:
            await self._announce(change)
        return await self.chat.chat_summary(user_id, chat_id)

    async def _announce(self, change: Change) -> None:
        """Tell every process and stream of a committed change (see the module's flow)."""
        chat = self.chat
        if change.added or change.removed:
            # control message first: removed members stop receiving the chat's events everywhere
            await chat.members_changed(change.chat_id, change.added, change.removed)
        members = await chat.members(change.chat_id)
        audience = sorted(set(members) | set(change.removed))
        # Not marked with the chat id: removed members get these last events past the closed gate.
        await chat.hub.publish(CHAT, audience, dumps({"type": "message", "message": change.message}),
                               event_id=change.message["id"])
        if change.added or change.removed or change.roles:
            people = await self.users.get_many(set(change.added))
            event: dict = {"type": "members", "chat_id": change.chat_id, "by": change.message["sender_id"],
                           "added": [{**people[u], "role": change.roles.get(u, MEMBER)}
                                     for u in change.added if u in people],
                           "removed": list(change.removed),
                           "roles": {str(u): r for u, r in change.roles.items()},
                           "message_id": change.message["id"]}
            if change.removed_at_message_id is not None:
                event["removed_at_message_id"] = change.removed_at_message_id
            await chat.hub.publish(CHAT, audience, dumps(event))
        if change.title is not None:
            await chat.hub.publish(CHAT, audience, dumps({"type": "chat_updated", "chat_id": change.chat_id,
                                                          "title": change.title, "by": change.message["sender_id"],
                                                          "message_id": change.message["id"]}))
        await self.notifications.deliver_unread(change.unread)

    async def former_limit(self, user_id: int, chat_id: int) -> Optional[int]:
        """The last message id ``user_id`` may read in a chat they left or were removed from (None: never left)."""
        return await self.dbx.read(former_limit, user_id, chat_id)
