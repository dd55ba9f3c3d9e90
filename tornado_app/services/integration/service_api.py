"""The service API (issue 22): what the product's backend asks of Squall, naming users by its own ids.

Every call names users by their external id (the product's id, the ``sub`` of their tokens)
and chats by Squall's id or, at creation, by a key the product chooses. The work is done by
the services that own it: users (``UserService.upsert_external``, the one provisioning path
that tokens share), sessions (revocation: every process closes the user's streams), chats
(``ChatService.change_members``: every process drops its cached member list and stops
delivering to removed members) and notifications (the publish API).

Decisions (docs/protocol.md, section 10):
    - members named when a chat is created or grown are provisioned just in time (an
      external id Squall has not seen yet becomes a user, named by its id until a token or
      an upsert names it), so a product can open a support chat before the user logs in;
    - a path naming an unknown external id, a message ``sender`` and the ``external_ids`` of
      a publish must name known users (404 ``user_not_found``; a publish then stores nothing);
    - a deleted user keeps its row (its messages keep their sender, shown as "Deleted user")
      and loses everything else that is personal (``erase``).
"""
from __future__ import annotations

import logging
import secrets
import time
import unicodedata
from typing import Dict, List, Optional, Tuple

import peewee

from models import (Chat, ChatMember, GROUP, PRIVATE, Notification, NotificationState, PushSubscription,
                    RefreshToken, User, UserPreference, tuples, username_key)
from models.user import DELETED, DELETED_NAME, SYSTEM
from ...errors import Conflict, NotFound, ValidationError
from ..chat.service import ChatService
from ..storage.db import DatabaseExecutor
from ..delivery.control import PreferencesChanged
from ..delivery.events import iso
from ..delivery.hub import Hub
from ..storage.ids import require_ids
from ..delivery.notifications import NotificationService
from ..delivery.preferences import PreferenceService
from ..identity.sessions import LOGGED_OUT, SessionService
from ..identity.users import TOMBSTONE_PREFIX, UserService, check_external_id, tombstone

log = logging.getLogger("squall.service_api")

SYSTEM_USERNAME = "~system"  # no builtin name holds "~"; external users are "~" + 24 hex digits
SYSTEM_NAME = "System"       # the display name of system messages' sender
MAX_CHAT_KEY = 255           # the column's length
MAX_TITLE = 128


def _has_controls(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def check_chat_key(value) -> str:
    """``value`` if it is a chat key: a string of 1-255 characters without control characters.

    Raises ValidationError ``invalid_key``.
    """
    if isinstance(value, str) and 1 <= len(value) <= MAX_CHAT_KEY and not _has_controls(value):
        return value
    raise ValidationError(f"'key' must be a string of 1 to {MAX_CHAT_KEY} characters without control "
                          "characters", "invalid_key")


def check_external_ids(value, most: int, name: str = "external_ids") -> List[str]:
    """A list of 1 to ``most`` external ids, repeats dropped (first one kept), each checked.

    Raises ValidationError ``invalid_external_ids`` (not a non-empty list),
    ``too_many_external_ids`` (over ``most``), ``invalid_external_id`` (one of them).
    """
    if not isinstance(value, list) or not value:
        raise ValidationError(f"'{name}' must be a non-empty list of external ids", "invalid_external_ids")
    if len(value) > most:
        raise ValidationError(f"'{name}' holds at most {most} external ids", "too_many_external_ids")
    return list(dict.fromkeys(check_external_id(v) for v in value))


def service_user(user: User) -> dict:
    """The service API's shape of a user."""
    return {"id": user.id, "external_id": user.external_id, "display_name": user.display_name,
            "avatar_url": user.avatar_url, "disabled": bool(user.disabled), "kind": user.kind}


class ServiceApi:
    """The product backend's operations on users, chats, messages and notifications (service token)."""

    def __init__(self, dbx: DatabaseExecutor, users: UserService, sessions: SessionService, chat: ChatService,
                 notifications: NotificationService, preferences: PreferenceService, hub: Hub,
                 max_publish_external_ids: int = 1000):
        self.dbx = dbx
        self.users = users
        self.sessions = sessions
        self.chat = chat
        self.notifications = notifications
        self.preferences = preferences
        self.hub = hub
        self.max_publish_external_ids = max_publish_external_ids
        self._system_id: Optional[int] = None

    # Users ------------------------------------------------------------------------------------

    async def user_id_of(self, external_id) -> int:
        """The id of the user ``external_id``.

        Raises ValidationError ``invalid_external_id``, NotFound ``user_not_found``.
        """
        return (await self.ids_of([check_external_id(external_id)]))[external_id]

    async def ids_of(self, external_ids: List[str]) -> Dict[str, int]:
        """``{external id: user id}`` for checked ``external_ids``.

        Raises NotFound ``user_not_found`` naming the unknown ones.
        """
        found = dict(await self.dbx.read(_ids_of, external_ids))
        unknown = [e for e in external_ids if e not in found]
        if unknown:
            raise NotFound(f"Unknown external ids: {', '.join(unknown[:20])}", "user_not_found")
        return found

    async def provision(self, external_ids: List[str]) -> Dict[str, int]:
        """``{external id: user id}``, creating the unknown users just in time (``upsert_external``)."""
        found = dict(await self.dbx.read(_ids_of, external_ids))
        for external_id in external_ids:
            if external_id not in found:
                user, _ = await self.users.upsert_external(external_id)
                found[external_id] = user["id"]
        return found

    async def upsert_user(self, external_id, body: dict) -> Tuple[dict, bool]:
        """Create or update ``external_id`` from ``{display_name?, avatar_url?, disabled?}``: ``(user, created)``.

        A field left out stays as it is; ``"avatar_url": null`` removes the avatar. Disabling
        a user closes every stream of the user on every process (``account_disabled``) and
        their tokens are refused until enabled again. Raises ValidationError
        (``invalid_external_id``, ``invalid_display_name``, ``invalid_avatar_url``, ``invalid_disabled``).
        """
        external_id = check_external_id(external_id)
        display_name = body.get("display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise ValidationError("'display_name' must be a string", "invalid_display_name")
        disabled = body.get("disabled")
        if disabled is not None and not isinstance(disabled, bool):
            raise ValidationError("'disabled' must be true or false", "invalid_disabled")
        clear_avatar = "avatar_url" in body and body["avatar_url"] is None
        existed = await self.dbx.read(_ids_of, [external_id])
        user, changed = await self.users.upsert_external(external_id, display_name, body.get("avatar_url"),
                                                         disabled, clear_avatar=clear_avatar)
        if changed:
            # every process reads the user again: partners see the new profile; the streams of a
            # user now disabled close (account_disabled), and their tokens are refused until enabled
            await self.users.announce_changed(user["id"])
        row = await self.dbx.read(User.get_by_id, user["id"])
        return service_user(row), not existed

    async def delete_user(self, external_id) -> dict:
        """Erase the user ``external_id``: ``{"deleted": true, "id"}``; their streams close (``account_deleted``).

        Erased: display name (now "Deleted user"), avatar, external id (free for a new user; the
        row keeps a tombstone of it, so that tokens issued until now get 401 ``account_deleted``),
        chat memberships (read positions, unread counts, chat mutes), notifications and
        broadcast read states, preferences, push subscriptions, sessions and refresh tokens.
        Kept: the user row (id, kind ``deleted``) so that the messages they sent stay in their
        chats, with ``sender_name`` "Deleted user"; other users' notifications about them.
        Raises ValidationError, NotFound ``user_not_found``.
        """
        user_id = await self.user_id_of(external_id)
        chats = await self.dbx.write(erase, user_id)
        # every process reads the user again, now of kind "deleted": their streams close
        # (account_deleted) and their tokens are refused with that code
        await self.users.announce_changed(user_id)
        await self.hub.control(PreferencesChanged(user_id))  # forgets here at once, then everywhere
        for chat_id in chats:
            await self.chat.members_changed(chat_id, [], [user_id])
        log.info("deleted user %s (by the service API)", user_id)
        return {"deleted": True, "id": user_id}

    async def revoke_user(self, external_id) -> dict:
        """Refuse every token of ``external_id`` issued until now; close their streams everywhere (``logged_out``)."""
        user_id = await self.user_id_of(external_id)
        await self.sessions.revoke_user(user_id, reason=LOGGED_OUT, revoke_tokens=True)
        return {"revoked": True, "id": user_id, "revoked_at": self.users.revoked_at(user_id) or int(time.time())}

    async def user_chats(self, external_id, limit: int, before: Optional[int]) -> dict:
        """A page of the user's chats with unread counts, most recent activity first; ``next_before`` continues."""
        user_id = await self.user_id_of(external_id)
        chats = await self.chat.list_chats(user_id, limit, before)
        unread = await self.chat.unread(user_id)
        return {"chats": await self._with_external_ids(chats), "unread_total": unread["total"],
                "next_before": chats[-1]["id"] if len(chats) == limit else None}

    async def _with_external_ids(self, chats: List[dict]) -> List[dict]:
        """``chats`` (as ``GET /api/chats`` lists them) with each chat's ``key`` and members' external ids."""
        user_ids = {m["id"] for c in chats for m in c["members"]}
        keys, externals = await self.dbx.read(_keys_and_externals, [c["id"] for c in chats], list(user_ids))
        # copies: the member dicts are the user cache's own, shared with every other answer
        return [{**c, "key": keys.get(c["id"]),
                 "members": [{**m, "external_id": externals.get(m["id"])} for m in c["members"]]}
                for c in chats]

    # Chats ------------------------------------------------------------------------------------

    async def chat_view(self, chat_id: int) -> dict:
        """``{id, kind, title, key, members: [{id, external_id, display_name}], created_at}``. Raises NotFound."""
        view = await self.dbx.read(_chat_view, chat_id)
        if view is None:
            raise NotFound(f"Chat {chat_id} does not exist", "chat_not_found")
        return view

    async def create_chat(self, body: dict) -> Tuple[dict, bool]:
        """A private or group chat of ``members`` (external ids): ``(chat, created)``.

        ``{"kind": "private"|"group", "members": [...], "title"?, "key"?}``. The same ``key``
        again returns the same chat (created False) when kind and members are the same, else
        Conflict ``chat_key_conflict``. A private chat is also found by its two members (there
        is one per pair). Unknown members are provisioned just in time. Raises ValidationError
        (``invalid_kind``, ``invalid_members``, ``invalid_external_id``, ``too_many_members``,
        ``invalid_title``, ``invalid_key``), Conflict ``chat_key_conflict``.
        """
        kind = body.get("kind")
        if kind not in (PRIVATE, GROUP):
            raise ValidationError("'kind' must be 'private' or 'group'", "invalid_kind")
        limit = self.chat.limits.max_group_members
        members = body.get("members")
        if not isinstance(members, list) or not members:
            raise ValidationError("'members' must be a non-empty list of external ids", "invalid_members")
        members = list(dict.fromkeys(check_external_id(m) for m in members))  # repeats count once
        if len(members) > limit:
            raise ValidationError(f"A group chat has at most {limit} members", "too_many_members")
        key = body.get("key")
        if key is not None or kind == GROUP:
            key = check_chat_key(key)
        title = ""
        if kind == PRIVATE:
            if len(members) != 2:
                raise ValidationError("A private chat has exactly two different members", "invalid_members")
        else:
            given = body.get("title")
            if not isinstance(given, str) or not given.strip() or len(given) > MAX_TITLE or _has_controls(given):
                raise ValidationError(f"'title' must be a non-empty string of at most {MAX_TITLE} characters",
                                      "invalid_title")
            title = given.strip()
        # a key naming another chat is refused before anyone is provisioned (a 409 creates nobody)
        if key is not None and not await self.dbx.read(_key_fits, key, kind, members):
            raise Conflict("This key (or this pair's private chat) names a chat with other members",
                           "chat_key_conflict")
        ids = await self.provision(members)
        user_ids = sorted(ids.values())
        chat_id, created = await self.dbx.write(_find_or_create_chat, kind, user_ids, title, key)
        view = await self.chat_view(chat_id)
        if not created and (sorted(m["id"] for m in view["members"]) != user_ids or view["kind"] != kind):
            raise Conflict("This key (or this pair's private chat) names a chat with other members",
                           "chat_key_conflict")
        return view, created

    async def add_members(self, chat_id: int, body: dict) -> dict:
        """Add ``{"external_ids": [...]}`` to group ``chat_id`` (unknown ones provisioned): ``{chat, added}``.

        Raises ValidationError, NotFound ``chat_not_found``, Conflict ``not_a_group``.
        """
        limit = self.chat.limits.max_group_members
        wanted = check_external_ids(body.get("external_ids"), limit)
        # 404, 409 not_a_group and 400 too_many_members before anyone is provisioned
        view = await self.chat_view(chat_id)
        if view["kind"] != GROUP:
            raise Conflict(f"Chat {chat_id} is a private chat: its members never change", "not_a_group")
        current = {m["external_id"] for m in view["members"]}
        if len(view["members"]) + len([e for e in wanted if e not in current]) > limit:
            raise ValidationError(f"A group chat has at most {limit} members", "too_many_members")
        ids = await self.provision(wanted)
        added, _ = await self.chat.change_members(chat_id, add=ids.values())
        by_id = {uid: e for e, uid in ids.items()}
        return {"chat": await self.chat_view(chat_id), "added": [by_id[uid] for uid in added]}

    async def remove_member(self, chat_id: int, external_id) -> dict:
        """Remove ``external_id`` from group ``chat_id``: ``{chat, removed}`` (False: was not a member).

        Raises ValidationError, NotFound (``user_not_found``, ``chat_not_found``), Conflict ``not_a_group``.
        """
        user_id = await self.user_id_of(external_id)
        _, removed = await self.chat.change_members(chat_id, remove=[user_id])
        return {"chat": await self.chat_view(chat_id), "removed": bool(removed)}

    # Messages ---------------------------------------------------------------------------------

    async def post_message(self, chat_id: int, body: dict) -> Tuple[dict, bool]:
        """Post ``{sender?, content, message_type?, client_id?}`` into ``chat_id``: ``(message, created)``.

        ``sender`` is a member's external id; without it (or null) the system user posts
        (``message_type`` then defaults to ``system_message``). A repeated ``client_id`` of
        the same sender returns the first message (created False); a ``client_id`` this sender
        already used in another chat is Conflict ``client_id_conflict`` (nothing is posted).
        Raises ValidationError (``invalid_sender``, the send's own codes), NotFound
        (``user_not_found``, ``chat_not_found``), Forbidden ``not_a_member``, Conflict.
        """
        sender = body.get("sender")
        if sender is None:
            sender_id, member_only = await self.system_user_id(), False
            body = {"message_type": "system_message", **body}
        else:
            if not isinstance(sender, str):
                raise ValidationError("'sender' must be a member's external id (or null: the system)",
                                      "invalid_sender")
            sender_id, member_only = await self.user_id_of(sender), True
        result = await self.chat.post(sender_id, chat_id, body, member_only=member_only)
        if not result.created and result.message["chat_id"] != chat_id:
            # (sender, client_id) is unique across chats: this one names a message of another chat
            raise Conflict("This sender's client_id names a message of another chat", "client_id_conflict")
        return result.message, result.created

    async def system_user_id(self) -> int:
        """The id of the system user (kind ``system``), created on first use."""
        if self._system_id is None:
            self._system_id = await self.dbx.write(_system_user)
        return self._system_id

    # Notifications ----------------------------------------------------------------------------

    async def publish(self, body: dict) -> dict:
        """The publish API with ``external_ids`` beside ``user_ids``: ``{ids, skipped[, skipped_external_ids]}``.

        ``external_ids`` (1 to ``max_publish_external_ids``) must all be known users (else
        404 ``user_not_found`` and nothing is stored); their users follow ``user_ids`` in the
        recipients' order. Raises what ``NotificationService.publish_to`` raises and
        ValidationError (``invalid_external_ids``, ``too_many_external_ids``, ``invalid_external_id``).
        """
        if "external_ids" not in body:
            return await self.notifications.publish_to(body)
        if body.get("broadcast"):
            raise ValidationError("give either 'user_ids' / 'external_ids' or 'broadcast': true")
        external_ids = check_external_ids(body["external_ids"], self.max_publish_external_ids)
        ids = await self.ids_of(external_ids)
        user_ids = body.get("user_ids")
        if user_ids is not None:
            require_ids(user_ids, "user_ids")
        body = {k: v for k, v in body.items() if k != "external_ids"}
        body["user_ids"] = list(dict.fromkeys(list(user_ids or []) + [ids[e] for e in external_ids]))
        answer = await self.notifications.publish_to(body)
        by_id = {uid: e for e, uid in ids.items()}
        answer["skipped_external_ids"] = [by_id[uid] for uid in answer["skipped"] if uid in by_id]
        return answer


# Database thread ------------------------------------------------------------------------------


def _ids_of(external_ids: List[str]) -> List[Tuple[str, int]]:
    rows: List[Tuple[str, int]] = []
    for at in range(0, len(external_ids), 500):
        rows.extend(tuples(User.select(User.external_id, User.id)
                           .where(User.external_id.in_(external_ids[at:at + 500]))))
    return rows


def _keys_and_externals(chat_ids: List[int],
                        user_ids: List[int]) -> Tuple[Dict[int, Optional[str]], Dict[int, Optional[str]]]:
    keys: Dict[int, Optional[str]] = dict(tuples(Chat.select(Chat.id, Chat.external_key)
                                                 .where(Chat.id.in_(chat_ids)))) if chat_ids else {}
    externals: Dict[int, Optional[str]] = {}
    for at in range(0, len(user_ids), 500):
        externals.update(tuples(User.select(User.id, User.external_id).where(User.id.in_(user_ids[at:at + 500]))))
    return keys, externals


def _key_fits(key: str, kind: str, external_ids: List[str]) -> bool:
    """False when ``key`` names a chat of another kind or other members than ``external_ids``."""
    chat = Chat.get_or_none(Chat.external_key == key)
    if chat is None:
        return True
    members = {ext for (ext,) in tuples(User.select(User.external_id).join(ChatMember, on=(ChatMember.user == User.id))
                                        .where(ChatMember.chat == chat.id))}
    return chat.kind == kind and members == set(external_ids)


def _chat_view(chat_id: int) -> Optional[dict]:
    chat = Chat.get_or_none(Chat.id == chat_id)
    if chat is None:
        return None
    members = [{"id": uid, "external_id": ext, "display_name": name}
               for uid, ext, name in tuples(User.select(User.id, User.external_id, User.display_name)
                                            .join(ChatMember, on=(ChatMember.user == User.id))
                                            .where(ChatMember.chat == chat_id).order_by(User.id))]
    return {"id": chat.id, "kind": chat.kind, "title": chat.title, "key": chat.external_key,
            "members": members, "created_at": iso(chat.created_at)}


def _find_or_create_chat(kind: str, user_ids: List[int], title: str, key: Optional[str]) -> Tuple[int, bool]:
    """``(chat id, created)``: the chat of ``key`` (or of the private pair), else a new one. Writer thread."""
    private_key = f"{user_ids[0]}:{user_ids[1]}" if kind == PRIVATE else None

    def existing() -> Optional[int]:
        if key is not None:
            chat = Chat.get_or_none(Chat.external_key == key)
            if chat is not None:
                return chat.id
        if private_key is not None:
            chat = Chat.get_or_none(Chat.private_key == private_key)
            if chat is not None:
                if key is not None and chat.external_key is not None:
                    raise Conflict("These two users' private chat has another key", "chat_key_conflict")
                if key is not None:  # the pair's chat, opened by the users themselves: named now
                    Chat.update(external_key=key).where(Chat.id == chat.id).execute()
                return chat.id
        return None

    found = existing()
    if found is not None:
        return found, False
    try:
        with Chat._meta.database.atomic():
            chat = Chat.create(kind=kind, title=title, private_key=private_key, external_key=key)
            ChatMember.insert_many([{"chat": chat.id, "user": uid} for uid in user_ids]).execute()
            return chat.id, True
    except peewee.IntegrityError:  # created meanwhile (the same key or pair, another request or process)
        found = existing()
        if found is None:
            raise
        return found, False


def _system_user() -> int:
    user = User.get_or_none(User.username == SYSTEM_USERNAME)
    if user is None:
        try:
            with User._meta.database.atomic():
                user = User.create(username=SYSTEM_USERNAME, username_key=username_key(SYSTEM_USERNAME),
                                   display_name=SYSTEM_NAME, password_hash="", kind=SYSTEM)
        except peewee.IntegrityError:  # created meanwhile by another process
            user = User.get(User.username == SYSTEM_USERNAME)
    return user.id


def erase(user_id: int) -> List[int]:
    """Erase user ``user_id``'s personal data but keep the row (see ``ServiceApi.delete_user``).

    Returns the ids of the chats they were in. Writer thread.
    """
    chats = [cid for (cid,) in tuples(ChatMember.select(ChatMember.chat).where(ChatMember.user == user_id))]
    ChatMember.delete().where(ChatMember.user == user_id).execute()
    NotificationState.delete().where(NotificationState.user == user_id).execute()
    Notification.delete().where(Notification.recipient == user_id).execute()
    UserPreference.delete().where(UserPreference.user == user_id).execute()
    PushSubscription.delete().where(PushSubscription.user == user_id).execute()
    RefreshToken.delete().where(RefreshToken.user == user_id).execute()
    # The external id becomes its tombstone (a value no product id can be), with the time of the
    # deletion in revoked_at: the id is free for a new user, and tokens issued until now are
    # refused with account_deleted (UserService.upsert_external). An earlier deletion of the same
    # id (deleted, re-created, deleted again) gives its tombstone up: the latest one decides.
    external_id = User.select(User.external_id).where(User.id == user_id).scalar()
    grave = tombstone(external_id) if external_id is not None and not external_id.startswith(TOMBSTONE_PREFIX) \
        else None
    if grave is not None:
        User.update(external_id=None).where((User.external_id == grave) & (User.id != user_id)).execute()
    # A fresh random username: the old one (external users') said nothing, but a builtin name would.
    name = "~" + secrets.token_hex(12)
    (User.update(display_name=DELETED_NAME, avatar_url=None, external_id=grave, kind=DELETED, disabled=True,
                 username=name, username_key=username_key(name), password_hash="", revoked_at=int(time.time()))
     .where(User.id == user_id).execute())
    return chats

