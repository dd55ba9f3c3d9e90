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

Flow of a change: one transaction (``group_store``: the caller's role read from the database,
the change, its system message stored by the one path of every message, counters) → ``ChatService.members_changed`` for a change of members (every
process drops its cached member list and closes the chat's events to removed members at once)
→ the system ``message``, ``members`` / ``chat_updated`` events and ``unread`` states.

A removed member keeps a ``chat_departure`` row: history and search show them the chat up to
and including the system message of their removal, and nothing after it.
"""
from __future__ import annotations

from typing import Optional

from models import MEMBER, OWNER, ADMIN
from ...errors import NotFound, RateLimited, ValidationError
from ..delivery.events import CHAT, dumps
from ..delivery.notifications import NotificationService
from ..identity.users import UserService
from ..operations.ratelimit import RateLimiter
from ..storage.db import DatabaseExecutor
from ..storage.ids import require_id
from . import group_store as store
from .group_store import Change, former_limit  # noqa: F401 (re-exported)

ROLES = (OWNER, ADMIN, MEMBER)
MAX_TITLE = 128


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

        change = await self.dbx.write(store.rename, user_id, chat_id, actor, title)
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

        await self._announce(await self.dbx.write(store.add_member, user_id, chat_id, actor, new_id, added, limit))
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

        change = await self.dbx.write(store.remove_member, user_id, chat_id, actor, target_id, target)
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

        change = await self.dbx.write(store.set_role, user_id, chat_id, actor, target_id, target, role)
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
