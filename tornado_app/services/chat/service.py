"""Chats and messages: the one service that ``/ws/chat``, ``/sse/chat`` + HTTP, and tests call.

Sending: validate → membership (cached; a change of members, by the service API, drops the
cached list on every process: ``members_changed``) → presence
of the other members (hub, all processes) → group commit (``MessageWriter``: message,
counters and notifications for inactive members in one transaction) → ack → publish the
message to members' chat streams, notifications and unread state to notification streams.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple


from models import PRIVATE, SYSTEM_MESSAGE
from models.user import DELETED_NAME
from ...errors import Forbidden, NotFound, RateLimited, Unavailable, ValidationError
from ...tasks import Batcher, spawn
from ..storage.db import DatabaseExecutor
from ..delivery.events import CHAT, NOTIFY, dumps, iso
from ..delivery.connection import Connection
from ..delivery.hub import Hub
from ..storage.ids import MAX_ID, is_id, is_int, require_id  # noqa: F401 (MAX_ID: re-exported)
from ..operations.metrics import Metrics
from ..delivery.control import MembersChanged
from ..delivery.notifications import (NotificationService, Notified, content_preview, unread_states)
from ..delivery.preferences import PreferenceService, mute_state_of
from ..operations.usage import MessageQuota
from ..operations.ratelimit import RateLimiter
from ..identity.users import UserService
from .edits import MessageChanges
from .replies import Replies
from .presence import PresenceService
from .shape import message_dict, render  # noqa: F401 (message_dict: re-exported)
from . import group_store, history_store
from .store import Outbox, Outcome, SendRequest, SendResult, store_sends
from .uploads import UploadService

log = logging.getLogger("squall.chat")

MESSAGE_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_BATCH = 512
# Seconds a process keeps refusing a removed member the events of a chat (``ChatService.admitted``):
# far longer than any send computed with the older member list can take to be published.
LEFT_MEMORY = 600.0


@dataclass(frozen=True)
class ChatLimits:
    """Amplification limits: what one user may make the server do for others."""

    max_group_members: int = 256
    groups_per_hour: int = 30  # per user
    typing_interval: float = 2.0  # seconds between typing frames fanned out per (user, chat)
    mark_read_interval: float = 0.5  # seconds between read-position writes per (user, chat)


class _ReadSlot:
    """Coalescing state of one (user, chat) read position."""

    __slots__ = ("last_write", "position", "future")

    def __init__(self):
        self.last_write = float("-inf")  # loop time of the last write started
        self.position = 0  # highest position waiting for the next write
        self.future = None  # resolves with the result of the next write


# ``(batch, outcomes, unread frames)``: publishes a committed batch (ChatService._publish_committed)
OnCommitted = Callable[[List[SendRequest], Sequence[Outcome], Dict[int, str]], Awaitable[None]]


class MessageWriter:
    """Group commit: sends that arrive together are stored in one transaction.

    Each send is acknowledged only after the transaction holding it commits. A send that
    fails (e.g. a constraint) fails alone: each runs in its own savepoint.
    """

    def __init__(self, dbx: DatabaseExecutor, on_committed: OnCommitted,
                 listening: Optional[Callable[[Iterable[int]], Optional[Set[int]]]] = None,
                 metrics: Optional[Metrics] = None, outbox: Optional[Outbox] = None):
        self.dbx = dbx
        self.metrics = metrics or Metrics()
        # Which users may have a notification stream (None: maybe anyone, in other processes).
        self.listening: Callable[[Iterable[int]], Optional[Set[int]]] = listening or (lambda user_ids: None)
        self._batcher: Batcher[SendRequest, SendResult] = Batcher(self._commit, name="chat.writer",
                                                                  max_batch=MAX_BATCH, after=self._committed)
        self._closing = False
        self.on_committed = on_committed  # publishes each committed batch (ChatService)
        # Called on the writer thread, inside the transaction, with ``(chat_id, sender_id, message)``
        # of every message stored: the webhook outbox (issue 23). None (webhooks off): no work at all.
        self.outbox = outbox
        # The unread frames of the batch just committed, for on_committed (None: the batch failed).
        self._unread: Optional[Dict[int, str]] = None

    def start(self) -> None:
        """Ready to take sends (each batch's flush runs in a task of its own)."""
        self._closing = False

    @property
    def queued(self) -> int:
        """Sends waiting for a flush (a batch being stored is no longer counted)."""
        return len(self._batcher)

    async def submit(self, req: SendRequest) -> SendResult:
        """Queue ``req`` and wait until it is committed. Raises Unavailable while shutting down."""
        if self._closing:
            raise Unavailable("The server is shutting down; send again after reconnecting", "shutting_down")
        req.accepted_at = time.time()
        return await self._batcher.submit(req)

    async def _commit(self, batch: List[SendRequest]) -> List[Outcome]:
        """Store ``batch`` in one transaction: per send its SendResult or the exception it fails with."""
        # Asked on the loop in the same turn that queues the write: a stream that
        # subscribes later reads its unread state after this commit (on the writer
        # thread, or a reader after it: NotificationService.unread_state), so no badge
        # is left stale.
        listeners = self.listening({u for req in batch for u in (req.sender_id, *req.others)})
        try:
            results, self._unread = await self.dbx.write(store_sends, batch, listeners, self.outbox)
        except Exception:
            log.exception("storing a batch of %d messages failed", len(batch))
            self._unread = None
            return [Unavailable("The message could not be stored", "store_failed") for _ in batch]
        metrics, now = self.metrics, time.time()
        for req, res in zip(batch, results):
            if not isinstance(res, Exception) and res.created:
                metrics.messages_stored += 1
                metrics.send_commit.observe(now - req.accepted_at)
        return results

    async def _committed(self, batch: List[SendRequest], results: Sequence[Outcome]) -> None:
        """Publish a committed batch (its senders have their acks first)."""
        unread, self._unread = self._unread, None
        if unread is None:
            return
        try:
            await self.on_committed(batch, results, unread)
        except Exception:
            log.exception("publishing committed messages failed")

    async def close(self) -> None:
        """Finish every queued send (each is stored and acknowledged), then stop."""
        self._closing = True
        await self._batcher.drain()


class ChatService:
    """Chats, messages, read state and typing for every transport."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, users: UserService, notifications: NotificationService,
                 preferences: PreferenceService, quota: MessageQuota, uploads: UploadService,
                 on_notified: Notified, max_message_length: int = 4000, rate_limit: float = 30.0,
                 rate_burst: int = 60, limits: ChatLimits = ChatLimits(), *, outbox: Optional[Outbox] = None,
                 on_read_stored: Optional[Callable[[int, int, int], None]] = None, edit_window: int = 48 * 3600,
                 presence: Optional[PresenceService] = None):
        self.dbx = dbx
        self.limits = limits
        self._group_limiter = RateLimiter(limits.groups_per_hour / 3600.0, limits.groups_per_hour)
        self._typing_at: Dict[Tuple[int, int], float] = {}  # (user, chat) -> loop time of the last fan-out
        self._reads: Dict[Tuple[int, int], _ReadSlot] = {}
        self.hub = hub
        self.users = users
        self.notifications = notifications
        self.max_message_length = max_message_length
        self._members: Dict[int, Tuple[int, ...]] = {}
        # Bumped whenever cached member lists are dropped: a load that started before must not store its
        # (possibly older) answer.
        self._members_epoch = 0
        self._left: Dict[Tuple[int, int], float] = {}  # (chat, user removed from it) -> monotonic time of removal
        self._kinds: Dict[int, str] = {}
        self._limiter = RateLimiter(rate_limit, rate_burst)
        self.writer = MessageWriter(dbx, self._publish_committed, lambda user_ids: hub.listening(NOTIFY, user_ids),
                                    hub.metrics, outbox=outbox)
        self.preferences = preferences  # mutes and Do Not Disturb (issue 11)
        self.quota = quota  # messages per user and UTC day (issue 20)
        self.on_notified = on_notified  # the push offer of each new_message notification
        self.uploads = uploads  # attachments (issue 25)
        self.presence = presence  # members' presence in chat summaries (issue 25)
        # Edits, deletes and reactions (issue 25): events of the chat stream, in their own module.
        self.replies = Replies(dbx, users)
        self.changes = MessageChanges(dbx, hub, notifications, self.require_member, self.validate_message,
                                      edit_window, self._offer_push)
        # ``(user_id, chat_id, position)`` on the writer thread, inside the transaction that moved a
        # read position forward: the webhook outbox's chat.read (issue 23). None: webhooks off.
        self.on_read_stored = on_read_stored

    def start(self) -> None:
        """Start the group-commit writer."""
        self.writer.start()

    async def close(self) -> None:
        """Store and acknowledge every queued send, then stop accepting new ones."""
        await self.writer.close()

    # Membership ---------------------------------------------------------------------------

    async def members(self, chat_id: int) -> Tuple[int, ...]:
        """Member ids of ``chat_id`` (cached). Raises NotFound."""
        cached = self._members.get(chat_id)
        if cached is not None:
            return cached

        epoch = self._members_epoch
        members = await self.dbx.read(group_store.member_ids, chat_id)
        if members is None:
            raise NotFound(f"Chat {chat_id} does not exist", "chat_not_found")
        if len(self._members) > 100_000:
            self._members.clear()
        if epoch == self._members_epoch:
            self._members[chat_id] = members
        return members

    async def require_member(self, user_id: int, chat_id) -> Tuple[int, ...]:
        """Members of ``chat_id`` if ``user_id`` is one. Raises ValidationError, NotFound, Forbidden."""
        chat_id = require_id(chat_id, "chat_id")
        members = await self.members(chat_id)
        if user_id not in members:
            raise Forbidden(f"You are not a member of chat {chat_id}", "not_a_member")
        return members

    # Membership changes (the service API, issue 22) ------------------------------------------

    async def change_members(self, chat_id: int, add: Iterable[int] = (),
                             remove: Iterable[int] = ()) -> Tuple[List[int], List[int]]:
        """Add ``add`` to and remove ``remove`` from group ``chat_id``: ``(added, removed)``, those that changed.

        Members already in (or already out) are left as they are, so a repeated call changes
        nothing. A new member has read everything before joining (unread 0; the history stays
        readable). Then ``members_changed`` tells every process and the members' streams.
        Raises NotFound ``chat_not_found``, Conflict ``not_a_group``, ValidationError
        ``too_many_members`` (past ``max_group_members``).
        """
        add, remove = set(add), set(remove)
        limit = self.limits.max_group_members

        added, removed = await self.dbx.write(group_store.change_members, chat_id, add, remove, limit)
        if added or removed:
            await self.members_changed(chat_id, added, removed)
        return added, removed

    async def members_changed(self, chat_id: int, added: List[int], removed: List[int]) -> None:
        """After a committed change of ``chat_id``'s members: every process, then every stream, hears of it.

        Every process drops its cached member list, stops delivering the chat's events to the
        removed members (``admitted``) and ends their presence in it (a control message; this
        process applies it at once). Then the members, old and new, get a ``chat_members``
        event on their chat streams (sent after the control message, so the removed members
        get it before the gate closes for them), and the removed ones a fresh ``unread``.
        """
        await self.hub.control(MembersChanged(chat_id, tuple(added), tuple(removed)))  # here at once, then everywhere
        try:
            members = await self.members(chat_id)
        except NotFound:
            members = ()
        people = await self.users.get_many(set(added))
        event = dumps({"type": "chat_members", "chat_id": chat_id,
                       "added": [people[uid] for uid in added if uid in people], "removed": list(removed)})
        audience = sorted(set(members) | set(removed))
        if audience:
            await self.hub.publish(CHAT, audience, event)
        if removed:
            await self.notifications.deliver_unread(await self.dbx.read(unread_states, list(removed)))

    def on_members_changed(self, message: MembersChanged) -> None:
        """Apply a ``MembersChanged`` control message (from any process; ControlDispatch)."""
        chat_id = message.chat_id
        self._members.pop(chat_id, None)
        self._members_epoch += 1
        for uid in message.added:
            self._left.pop((chat_id, uid), None)
        removed = message.removed
        if not removed:
            return
        now = time.monotonic()
        if len(self._left) > 10_000:
            self._left = {k: t for k, t in self._left.items() if now - t < LEFT_MEMORY}
        registry = self.hub.registry
        for uid in removed:
            self._left[(chat_id, uid)] = now
            for conn in list(registry.user_connections(uid)):
                if chat_id in conn.joined_chats:
                    spawn(self._leave(conn, chat_id), name="chat.leave_removed")

    async def _leave(self, conn: Connection, chat_id: int) -> None:
        try:
            await self.hub.leave(conn, chat_id)
        except Exception:  # the claim expires by itself if the broker is down
            log.warning("could not end the presence of user %s in chat %s", conn.user_id, chat_id)

    def admitted(self, chat_id: int, user_ids: list) -> list:
        """``user_ids`` without the members lately removed from ``chat_id`` (Hub.chat_gate; memory only).

        An event computed from an older member list (a send under way on another process
        when the member was removed) thus never reaches a removed member's streams.
        """
        left = self._left
        if not left:
            return user_ids
        now = time.monotonic()
        return [uid for uid in user_ids if now - left.get((chat_id, uid), -LEFT_MEMORY) >= LEFT_MEMORY]

    def forget_members(self) -> None:
        """Drop every cached member list (after a broker gap: a ``members`` message may have been lost).

        The removals remembered for ``admitted`` go too: they matter only while a send computed
        from an older list may still be published, and the gap ended every stream anyway.
        """
        self._members.clear()
        self._members_epoch += 1
        self._left.clear()

    # Chats --------------------------------------------------------------------------------

    async def open_private_chat(self, user_id: int, other_id) -> dict:
        """The private chat of ``user_id`` and ``other_id``, created on first use."""
        other_id = require_id(other_id, "user_id")
        if other_id == user_id:
            raise ValidationError("A private chat needs another user")
        await self.users.get(other_id)  # NotFound for an unknown user
        key = f"{min(user_id, other_id)}:{max(user_id, other_id)}"

        chat_id = await self.dbx.write(group_store.private_chat, key, [user_id, other_id])
        return await self.chat_summary(user_id, chat_id)

    async def create_group(self, user_id: int, member_ids, title) -> dict:
        """A new group chat of ``user_id`` and ``member_ids`` titled ``title``."""
        if not isinstance(member_ids, list) or not all(is_id(m) for m in member_ids):
            raise ValidationError("'member_ids' must be a list of user ids")
        if not isinstance(title, str) or not title.strip() or len(title) > 128:
            raise ValidationError("'title' must be a non-empty string of at most 128 characters")
        members = sorted(set(member_ids) | {user_id})
        if len(members) < 2:
            raise ValidationError("A group chat needs at least one other member")
        if len(members) > self.limits.max_group_members:
            raise ValidationError(f"A group chat has at most {self.limits.max_group_members} members",
                                  "too_many_members")
        if not self._group_limiter.allow(user_id):
            raise RateLimited(f"At most {self.limits.groups_per_hour} new groups per hour",
                              retry_after=self._group_limiter.retry_after(user_id))
        found = await self.users.get_many(members)
        missing = [m for m in members if m not in found]
        if missing:
            raise NotFound(f"Unknown user ids: {missing[:20]}", "user_not_found")

        chat_id = await self.dbx.write(group_store.create_group, user_id, members, title.strip())
        return await self.chat_summary(user_id, chat_id)

    async def chat_summary(self, user_id: int, chat_id: int, former: bool = False) -> dict:
        """One chat as listed by ``GET /api/chats``; ``former``: also one the user left or was removed from.

        Raises NotFound (``chat_not_found``).
        """
        chats = await self._summaries(user_id, [chat_id], former=former)
        if not chats:
            raise NotFound(f"Chat {chat_id} does not exist", "chat_not_found")
        return chats[0]

    async def visible_chat(self, user_id: int, chat_id) -> dict:
        """``GET /api/chats/{id}``: a chat of ``user_id``, or one they left (``"member": false``).

        Raises ValidationError, NotFound, Forbidden ``not_a_member`` (never a member, or
        a former member of a chat whose departure was forgotten).
        """
        try:
            await self.require_member(user_id, chat_id)
        except Forbidden:
            if await self.dbx.read(group_store.former_limit, user_id, chat_id) is None:
                raise
        return await self.chat_summary(user_id, chat_id, former=True)

    async def list_chats(self, user_id: int, limit: int = 100, before: Optional[int] = None) -> List[dict]:
        """A page of ``user_id``'s chats, most recent activity first.

        The groups the user left or was removed from come too, marked ``"member": false``
        with ``left_at`` and ``removed_at_message_id``; they are placed by the time of the
        departure and show what the user could see then (the departure's system message as
        the last message, no members, no unread count).
        ``before`` is the id of the last chat of the previous page: the page continues after
        it in the same order. Raises ValidationError (``before`` not one of the user's chats).
        """
        if before is not None:
            require_id(before, "before")
        return await self._summaries(user_id, None, limit, before, former=True)

    async def _summaries(self, user_id: int, only: Optional[List[int]], limit: Optional[int] = None,
                         before: Optional[int] = None, former: bool = False) -> List[dict]:
        epoch = self._members_epoch
        chats, members, roles, last, extras, left = await self.dbx.read(history_store.summaries, user_id, only, limit,
                                                                        before, former)
        rendered = {m["id"]: m for m in await render(self.users, list(last.values()), extras)}
        # the last messages' senders too: the system user and deleted users are nobody's members
        all_users = {u for ms in members.values() for u in ms} | {m.sender_id for m in last.values()}
        people = await self.users.get_many(all_users)
        out = []
        for c in chats:
            if c.id in left:
                left_at, upto = left[c.id]
                lm = last.get(upto)
                out.append({
                    "id": c.id, "kind": c.kind, "title": c.title, "members": [],
                    "last_message": rendered.get(lm.id) if lm else None,
                    "unread_count": 0, "created_at": iso(c.created_at), **mute_state_of(None),
                    "member": False, "left_at": iso(left_at), "removed_at_message_id": upto or None,
                })
                continue
            member_list = [{**people[u], "role": roles[(c.id, u)]} for u in members[c.id] if u in people]
            if epoch == self._members_epoch:
                self._members.setdefault(c.id, tuple(sorted(members[c.id])))
            title = c.title
            if c.kind == PRIVATE:
                others = [p for p in member_list if p["id"] != user_id]
                # no other member: the partner's account was deleted (service API)
                title = others[0]["display_name"] if others else (c.title or DELETED_NAME)
            lm = last.get(c.last_message_id)
            out.append({
                "id": c.id, "kind": c.kind, "title": title, "members": member_list,
                "last_message": rendered.get(lm.id) if lm else None,
                "unread_count": c.unread_count, "created_at": iso(c.created_at),
                **mute_state_of(c.muted_until), "member": True,
            })
        if self.presence is not None and out:
            await self.presence.annotate(user_id, out)
        return out

    # Messages -----------------------------------------------------------------------------

    async def history(self, user_id: int, chat_id, before_id=None, limit=50) -> List[dict]:
        """A page of ``chat_id``'s messages before ``before_id``, oldest to newest.

        A former member (removed, or left) reads the history up to their removal's system message.
        """
        upto = None
        try:
            await self.require_member(user_id, chat_id)
        except Forbidden:
            upto = await self.dbx.read(group_store.former_limit, user_id, chat_id)
            if upto is None:
                raise
        if before_id is not None:
            before_id = require_id(before_id, "before_id")
        if upto is not None:
            before_id = upto + 1 if before_id is None else min(before_id, upto + 1)
        if not is_int(limit) or not 1 <= limit <= 200:
            raise ValidationError("'limit' must be between 1 and 200")

        rows, extras = await self.dbx.read(history_store.history_page, chat_id, before_id, limit)
        return await render(self.users, rows, extras)

    def validate_message(self, body: dict, attached: bool = False) -> Tuple[str, str, Optional[str]]:
        """``(content, message_type, client_id)`` from a send request. Raises ValidationError.

        ``attached``: the send lists attachments, so its content may be empty (a photo without
        a caption); it defaults to "".
        """
        content = body.get("content", "" if attached else None)
        message_type = body.get("message_type", "text_message")
        client_id = body.get("client_id")
        if not isinstance(content, str):
            raise ValidationError("'content' must be a string", "invalid_content")
        if not attached and not content.strip():
            raise ValidationError("'content' must not be empty", "empty_content")
        if len(content) > self.max_message_length:
            raise ValidationError(f"'content' is longer than {self.max_message_length} characters",
                                  "content_too_long")
        if not isinstance(message_type, str) or not MESSAGE_TYPE_RE.match(message_type):
            raise ValidationError("'message_type' must be 1-32 of a-z, 0-9 and '_'", "invalid_message_type")
        if message_type == SYSTEM_MESSAGE:  # only group changes store these (issue 25): never spoofed
            raise ValidationError("'system' messages are stored by group changes only", "invalid_message_type")
        if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= 64):
            raise ValidationError("'client_id' must be a string of 1-64 characters", "invalid_client_id")
        return content, message_type, client_id

    async def send_message(self, user_id: int, body: dict, exclude_conn: Optional[str] = None) -> dict:
        """Store a message from ``user_id`` and deliver it; returns the stored message.

        ``body`` has ``content``, ``message_type?``, ``client_id?`` and ``chat_id`` or
        ``recipient_id`` (private chat, found or created). Returns once committed; a repeated
        ``client_id`` returns the message stored the first time. ``exclude_conn`` is the
        sending connection, which gets an ack instead of the ``message`` event.
        ``attachments`` (optional) lists upload ids of the sender's, not attached yet, at
        most ``UploadLimits.max_attachments``; they are attached in the message's transaction.
        Raises ValidationError (``invalid_attachments``, ``too_many_attachments``,
        ``attachment_not_found``, ``attachment_already_used`` among them), NotFound, Forbidden,
        RateLimited (``rate_limited``, or ``quota_exceeded`` past the daily quota), Unavailable.
        """
        raw_attachments = body.get("attachments")
        attachments: Tuple[str, ...] = ()
        if raw_attachments is not None and raw_attachments != []:
            attachments = tuple(self.uploads.validate_ids(raw_attachments))
        content, message_type, client_id = self.validate_message(body, bool(attachments))
        chat_id, recipient_id = body.get("chat_id"), body.get("recipient_id")
        if (chat_id is None) == (recipient_id is None):
            raise ValidationError("give either 'chat_id' or 'recipient_id'")
        if not self._limiter.allow(user_id):
            raise RateLimited("You are sending messages too fast; slow down",
                              retry_after=self._limiter.retry_after(user_id))
        info: Tuple[dict, ...] = ()
        if attachments:
            info = tuple(await self.uploads.check_attachable(user_id, attachments, client_id))
        reply_to = body.get("reply_to")
        quota = self.quota
        await quota.reserve(user_id)  # O(1) but for a user's first send of the day
        created = False
        try:
            result = await self._send(user_id, chat_id, recipient_id, content, message_type, client_id,
                                      exclude_conn, attachments, info, reply_to)
            created = result.created
        finally:
            if not created:
                quota.release(user_id)  # nothing new stored: a failure or a repeated client_id
        return result.message

    async def _send(self, user_id: int, chat_id, recipient_id, content: str, message_type: str,
                    client_id: Optional[str], exclude_conn: Optional[str], attachments: Tuple[str, ...] = (),
                    info: Tuple[dict, ...] = (), reply_to: object = None) -> SendResult:
        """The validated part of ``send_message``: chat, audience, group commit."""
        if recipient_id is not None:
            chat_id = (await self.open_private_chat(user_id, recipient_id))["id"]
        members = await self.require_member(user_id, chat_id)
        return await self._submit(user_id, chat_id, members, content, message_type, client_id, exclude_conn,
                                  attachments, info, reply_to)

    async def post(self, sender_id: int, chat_id: int, body: dict, member_only: bool = True) -> SendResult:
        """Store and deliver a message of the service API (issue 22): as a member, or as the system.

        ``body`` has ``content``, ``message_type?``, ``client_id?`` (checked as for any send).
        ``member_only`` False lets a sender who is not a member post (the system user). No rate
        limit or daily quota: the product's backend is trusted, unlike its users' clients. A
        repeated ``client_id`` of the same sender returns the first message (``created`` False).
        Raises ValidationError, NotFound ``chat_not_found``, Forbidden ``not_a_member``, Unavailable.
        """
        content, message_type, client_id = self.validate_message(body)
        members = await self.members(chat_id)
        if member_only and sender_id not in members:
            raise Forbidden(f"The sender is not a member of chat {chat_id}", "not_a_member")
        return await self._submit(sender_id, chat_id, members, content, message_type, client_id, None)

    async def _submit(self, user_id: int, chat_id: int, members, content: str, message_type: str,
                      client_id: Optional[str], exclude_conn: Optional[str], attachments: Tuple[str, ...] = (),
                      info: Tuple[dict, ...] = (), reply_to: object = None) -> SendResult:
        """Audience (presence, mutes, DND) of a checked send, then the group commit.

        A reply (``reply_to``) is checked here (400 ``invalid_reply_to``), and the ``@username``
        of members resolved: both only when present (replies.py), so a plain send costs nothing more.
        """
        reply: Optional[dict] = None
        called: FrozenSet[int] = frozenset()
        if reply_to is not None:
            reply, replied = await self.replies.reply_target(chat_id, reply_to)
            called = frozenset((replied,))
        mentions: Tuple[int, ...] = ()
        if "@" in content:
            mentions = await self.replies.mentioned(members, content)
        if mentions:
            called = called | frozenset(mentions)
        sender = await self.users.get(user_id)
        others = [m for m in members if m != user_id]
        active = await self.hub.active_users(chat_id, others) if others else set()
        notify_ids = [m for m in others if m not in active]
        silent_ids: FrozenSet[int] = frozenset()
        if notify_ids:
            notify_ids, silent_ids = await self._audience(chat_id, notify_ids, called)
        req = SendRequest(chat_id=chat_id, sender_id=user_id, sender_name=sender["display_name"],
                          content=content, message_type=message_type, client_id=client_id,
                          notify_ids=notify_ids, others=others, exclude=exclude_conn, silent_ids=silent_ids,
                          attachments=attachments, attachment_info=info, reply_to=reply, mentions=mentions,
                          called=frozenset(u for u in called if u in notify_ids))
        return await self.writer.submit(req)

    async def _audience(self, chat_id: int, notify_ids: List[int],
                        called: frozenset = frozenset()) -> Tuple[List[int], frozenset]:
        """``(who gets a notification, which of them silently)``: mutes and DND, from caches.

        A member ``called`` (mentioned or replied to) is notified even in a muted chat; Do Not
        Disturb still makes their notification silent.
        """
        prefs = self.preferences
        now = time.time()
        mutes = prefs.mutes_cached(chat_id)
        if mutes is None:
            mutes = await prefs.chat_mutes(chat_id)
        if mutes:
            notify_ids = [m for m in notify_ids if m in called or not prefs.is_muted(mutes, m, now)]
        silent_ids = []
        for uid, p in (await prefs.many(notify_ids)).items():
            if p.dnd(now):
                silent_ids.append(uid)
        return notify_ids, frozenset(silent_ids)

    async def _publish_committed(self, batch: List[SendRequest], results: Sequence[Outcome],
                                 unread: Dict[int, str]) -> None:
        """After a commit: messages to chat streams, notifications and unread state to the others."""
        for req, res in zip(batch, results):
            if isinstance(res, Exception) or not res.created:
                continue
            data = dumps({"type": "message", "message": res.message})
            members = (req.sender_id, *req.others)
            await self.hub.publish(CHAT, members, data, event_id=res.message["id"],
                                   exclude=req.exclude, since=req.accepted_at, chat_id=req.chat_id)
            if res.notifications:
                await self.notifications.deliver_stored(res.notifications)
                self._offer_pushes(req, res)
        await self.notifications.deliver_unread(unread)

    def _offer_push(self, user_id: int, frame: dict) -> None:
        """Offer one frame to Web Push (a withdrawn notification); nothing when push is not wired."""
        if self.on_notified is not None:
            self.on_notified(user_id, frame, False)

    def _offer_pushes(self, req: SendRequest, res: SendResult) -> None:
        """Offer each new_message notification to Web Push (it decides, mostly from memory)."""
        message = res.message
        preview = content_preview(message["content"])
        for nid, uid, _ in res.notifications:
            self.on_notified(uid, {"id": nid, "type": "mention" if uid in req.called else "new_message",
                                   "chat_id": req.chat_id,
                                   "sender_name": req.sender_name, "content_preview": preview},
                             uid in req.silent_ids)

    async def replay_messages(self, user_id: int, after_id: int, limit: int) -> Optional[List[Tuple[int, str]]]:
        """Chat stream events of every chat of ``user_id`` with id > ``after_id``; None if over ``limit``.

        ``message`` frames (in their current state: edited, or a tombstone) and the change
        events stored since (``message_edited``, ``message_deleted``, ``reaction``), in id order.
        """
        rows, extras, changes = await self.dbx.read(history_store.replay_rows, user_id, after_id, limit)
        if len(rows) > limit:
            return None
        plain = iter(await render(self.users, [m for m in rows if m.event is None], extras))
        return [(m.id, changes[m.id] if m.event is not None else dumps({"type": "message", "message": next(plain)}))
                for m in rows]

    async def latest_message_id(self) -> int:
        """The highest message id stored (0 when none)."""
        return await self.dbx.read(history_store.latest_message_id)

    # Read state and typing ----------------------------------------------------------------

    async def mark_read(self, user_id: int, chat_id, message_id, wait: bool = True) -> Optional[dict]:
        """Mark ``chat_id`` read up to ``message_id`` for ``user_id``; read receipt + unread update.

        The read position only moves forward. Writes are coalesced: at most one per user and
        chat per ``mark_read_interval``; calls in between wait for the next write, which
        stores the highest position asked for (and sends its receipt). With ``wait`` False a
        coalesced call returns None at once (a WebSocket frame must not hold up the next).
        Raises ValidationError, NotFound, Forbidden.
        """
        members = await self.require_member(user_id, chat_id)
        message_id = require_id(message_id, "message_id")

        if not await self.dbx.read(history_store.message_in_chat, chat_id, message_id):
            raise NotFound(f"Message {message_id} is not in chat {chat_id}", "message_not_found")
        key = (user_id, chat_id)
        slot = self._reads.get(key)
        if slot is None:
            if len(self._reads) > 100_000:
                self._reads = {k: v for k, v in self._reads.items() if v.future is not None}
            slot = self._reads[key] = _ReadSlot()
        loop = asyncio.get_running_loop()
        now = loop.time()
        if slot.future is None and now - slot.last_write >= self.limits.mark_read_interval:
            slot.last_write = now
            return await self._apply_read(user_id, chat_id, message_id, members)
        slot.position = max(slot.position, message_id)
        if slot.future is None:
            slot.future = loop.create_future()
            loop.call_at(slot.last_write + self.limits.mark_read_interval,
                         lambda: spawn(self._flush_read(key, members), name="chat.mark_read"))
        if not wait:
            return None
        return await asyncio.shield(slot.future)

    async def _flush_read(self, key: Tuple[int, int], members) -> None:
        """Write the coalesced read position of ``key`` and resolve everyone waiting for it."""
        slot = self._reads[key]
        future, position = slot.future, slot.position
        slot.future, slot.position = None, 0
        slot.last_write = asyncio.get_running_loop().time()
        try:
            future.set_result(await self._apply_read(key[0], key[1], position, members))
        except Exception as exc:
            log.warning("storing the read position of user %s in chat %s failed (%s)", key[0], key[1],
                        type(exc).__name__)
            future.set_exception(exc)
            future.exception()  # seen: every waiter gets it

    async def _apply_read(self, user_id: int, chat_id: int, message_id: int, members) -> dict:
        """Store the read position (one write), then the receipt and the unread update."""
        position, unread = await self.dbx.write(history_store.store_read, user_id, chat_id, message_id,
                                                self.on_read_stored)
        others = [m for m in members if m != user_id]
        if others:
            await self.hub.publish(CHAT, others, dumps({"type": "read", "chat_id": chat_id,
                                                        "user_id": user_id, "message_id": position}),
                                   chat_id=chat_id)
        await self.notifications.deliver_unread(unread)
        return {"chat_id": chat_id, "message_id": position}

    async def typing(self, user_id: int, chat_id) -> None:
        """Tell the other members' chat streams that ``user_id`` is typing in ``chat_id``.

        At most once per ``typing_interval`` per user and chat: extra calls are dropped silently.
        """
        members = await self.require_member(user_id, chat_id)
        now = asyncio.get_running_loop().time()
        key = (user_id, chat_id)
        if now - self._typing_at.get(key, float("-inf")) < self.limits.typing_interval:
            return
        if len(self._typing_at) > 100_000:
            self._typing_at.clear()  # bounded memory; forgetting only lets one more frame through
        self._typing_at[key] = now
        user = await self.users.get(user_id)
        others = [m for m in members if m != user_id]
        if others:
            await self.hub.publish(CHAT, others, dumps({"type": "typing", "chat_id": chat_id,
                                                        "user_id": user_id, "user_name": user["display_name"]}),
                                   chat_id=chat_id)

    async def unread(self, user_id: int) -> dict:
        """``{total, chats: {chat_id: count}, muted?: {chat_id: count}}`` for ``user_id`` (total without muted)."""
        state = json.loads(await self.notifications.unread_state(user_id))
        state.pop("type", None)
        return state
