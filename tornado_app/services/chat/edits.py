"""Changes of a sent message (issue 25): edit, delete for everyone, reactions.

Every change is an event of the chat stream with an id of its own, taken from the message
table's ids: a *change row* is a row of ``message`` with ``event`` set (the event's JSON,
never any content) and empty content. So a change is ordered among the messages exactly as
it happened, is replayed on resume by the same query as the messages (``replay``), and old
clients' cursors (message ids) keep working. History, unread counts, quotas and previews skip
change rows (``Message.event IS NULL``). docs/architecture.md, "Message changes are events".

Rules (docs/protocol.md): only the sender edits, within ``edit_window`` seconds of sending;
only the sender deletes, at any time; a deleted message's content is erased from the
database (its row stays as a tombstone, so replies and cursors still find it), its
attachments are detached, its reactions dropped, and the ``new_message`` notifications it
caused are withdrawn (deleted, a ``notification_withdrawn`` event, unread counts corrected).
An edit rewrites those notifications' ``content_preview``. Any member reacts with one emoji
(``emoji.is_emoji``), at most one of each per user and message; adding or removing twice is
not an error (no second event).
"""
from __future__ import annotations

import datetime
import json
from typing import Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, cast

import peewee

from models import SYSTEM_MESSAGE, ChatMember, Message, Notification, Reaction, Upload, utcnow
from ...errors import Conflict, Forbidden, NotFound, ValidationError
from ..delivery.events import CHAT, NOTIFY, dumps, iso
from ..delivery.hub import Hub
from ..delivery.notification_store import unread_states
from ..delivery.notifications import NotificationService, content_preview
from ..storage.db import DatabaseExecutor
from ..storage.ids import require_id
from .emoji import MAX_EMOJI_BYTES, is_emoji

# Users listed per emoji in a message's ``reactions`` (``count`` is always the full count).
MAX_REACTION_USERS = 20

EDITED, DELETED, REACTION = "message_edited", "message_deleted", "reaction"
NOTIFIED = ("new_message", "mention")  # the notification types a message causes


def _insert_change(chat_id: int, actor: int, event: dict) -> int:
    """Store a change row (writer thread, in a transaction); its id is the event's id."""
    return Message.insert(chat=chat_id, sender=actor, content="", message_type=event["type"],
                          event=dumps(event), created_at=utcnow()).execute()


def reactions_of(message_ids: Iterable[int]) -> Dict[int, List[dict]]:
    """``{message id: [{emoji, count, user_ids}]}`` (first reacted first; database thread)."""
    ids = list(message_ids)
    out: Dict[int, Dict[str, dict]] = {}
    if not ids:
        return {}
    query = (Reaction.select(Reaction.message, Reaction.emoji, Reaction.user)
             .where(Reaction.message.in_(ids)).order_by(Reaction._meta.primary_key).tuples())
    rows = cast(Iterable[Tuple[int, str, int]], query)
    for mid, emoji, uid in rows:
        entry = out.setdefault(mid, {}).setdefault(emoji, {"emoji": emoji, "count": 0, "user_ids": []})
        entry["count"] += 1
        if len(entry["user_ids"]) < MAX_REACTION_USERS:
            entry["user_ids"].append(uid)
    return {mid: list(by_emoji.values()) for mid, by_emoji in out.items()}


def mentions_after(user_id: int, chat_id: int, position: int) -> int:
    """Unread mentions of ``user_id`` in ``chat_id``: its ``mention`` notifications after ``position``."""
    return Notification.select().where(
        (Notification.recipient == user_id) & (Notification.chat_id == chat_id) & (Notification.type == "mention")
        & (Notification.message_id > position)).count()


class MessageChanges:
    """Edit, delete and react, for every transport; events on the chat streams of the members."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, notifications: NotificationService,
                 require_member: Callable[[int, object], Awaitable[Sequence[int]]],
                 validate_content: Callable[[dict], Tuple[str, str, Optional[str]]], edit_window: int,
                 offer_push: Callable[[int, dict], None]):
        self.dbx = dbx
        self.hub = hub
        self.notifications = notifications
        self.require_member = require_member
        self.validate_content = validate_content
        self.edit_window = edit_window
        self.offer_push = offer_push  # (user_id, frame): Web Push decides, as for a notification

    @staticmethod
    def _target(chat_id: int, message_id: int) -> Message:
        """The message (not a change row) ``message_id`` of ``chat_id``. Raises NotFound."""
        m = Message.get_or_none((Message.id == message_id) & (Message.chat == chat_id) & Message.event.is_null())
        if m is None:
            raise NotFound(f"Message {message_id} is not in chat {chat_id}", "message_not_found")
        return m

    async def edit(self, user_id: int, chat_id, message_id, content) -> dict:
        """Replace the content of the caller's message; returns the ``message_edited`` event.

        Raises ValidationError (content as for a send), NotFound ``message_not_found``,
        Forbidden ``not_sender`` / ``edit_window_passed``, Conflict ``message_deleted``.
        """
        members = await self.require_member(user_id, chat_id)
        chat_id, message_id = require_id(chat_id, "chat_id"), require_id(message_id, "message_id")
        text, _, _ = self.validate_content({"content": content})
        window = self.edit_window

        def apply():
            m = self._target(chat_id, message_id)
            if m.sender_id != user_id:
                raise Forbidden("Only the sender edits a message", "not_sender")
            if m.message_type == SYSTEM_MESSAGE:  # a group change's record (issue 25, groups.py)
                raise Forbidden("A system message cannot be changed", "system_message")
            if m.deleted_at is not None:
                raise Conflict("The message was deleted", "message_deleted")
            now = utcnow()
            if now - m.created_at > datetime.timedelta(seconds=window):
                raise Forbidden(f"A message can be edited for {window} seconds after sending", "edit_window_passed")
            # Conditional: a delete committed meanwhile by another process wins (PostgreSQL reads committed).
            if not Message.update(content=text, edited_at=now).where(
                    (Message.id == m.id) & Message.deleted_at.is_null()).execute():
                raise Conflict("The message was deleted", "message_deleted")
            event = {"type": EDITED, "chat_id": chat_id, "message_id": m.id}
            eid = _insert_change(chat_id, user_id, event)
            preview = content_preview(text)
            rows = list(Notification.select(Notification.id, Notification.recipient, Notification.payload)
                        .where((Notification.message_id == m.id) & Notification.type.in_(NOTIFIED)).tuples())
            for nid, _, payload in rows:
                body = json.loads(payload)
                body["content_preview"] = preview
                Notification.update(payload=dumps(body)).where(Notification.id == nid).execute()
            return eid, {**event, "event_id": eid, "content": text, "edited_at": iso(now)}, \
                [(recipient, nid) for nid, recipient, _ in rows], preview

        eid, event, notified, preview = await self.dbx.write(apply)
        await self.hub.publish(CHAT, members, dumps(event), event_id=eid, chat_id=chat_id)
        for recipient, nid in notified:
            await self.hub.publish(NOTIFY, [recipient], dumps({
                "type": "notification_updated", "notification_id": nid, "chat_id": chat_id,
                "message_id": message_id, "content_preview": preview}))
        return event

    async def delete(self, user_id: int, chat_id, message_id) -> dict:
        """Delete the caller's message for everyone (a tombstone); returns the ``message_deleted`` event.

        Deleting a deleted message again answers the same event (idempotent, no new event).
        Raises NotFound ``message_not_found``, Forbidden ``not_sender``.
        """
        members = await self.require_member(user_id, chat_id)
        chat_id, message_id = require_id(chat_id, "chat_id"), require_id(message_id, "message_id")

        def apply():
            m = self._target(chat_id, message_id)
            if m.sender_id != user_id:
                raise Forbidden("Only the sender deletes a message for everyone", "not_sender")
            if m.message_type == SYSTEM_MESSAGE:
                raise Forbidden("A system message cannot be changed", "system_message")
            event = {"type": DELETED, "chat_id": chat_id, "message_id": m.id}
            if m.deleted_at is not None:
                return None, event, [], {}
            now = utcnow()
            # The search index follows content (triggers / generated column): erased here, gone there.
            if not Message.update(content="", deleted_at=now).where(
                    (Message.id == m.id) & Message.deleted_at.is_null()).execute():
                return None, event, [], {}  # deleted meanwhile by another process: once is enough
            # Detached, its files are orphans: the orphan sweep (uploads.py) frees them.
            Upload.update(message=None, chat=None).where(Upload.message == m.id).execute()
            Reaction.delete().where(Reaction.message == m.id).execute()
            eid = _insert_change(chat_id, user_id, event)
            withdrawn = list(Notification.select(Notification.id, Notification.recipient, Notification.type,
                                                 Notification.payload)
                             .where((Notification.message_id == m.id) & Notification.type.in_(NOTIFIED)).tuples())
            if withdrawn:
                Notification.delete().where(Notification.id.in_([nid for nid, _, _, _ in withdrawn])).execute()
            for _, recipient, ntype, _ in withdrawn:
                if ntype == "mention":  # recounted: the read position decides what is still unread
                    member = ChatMember.get_or_none((ChatMember.chat == chat_id) & (ChatMember.user == recipient))
                    if member is not None:
                        ChatMember.update(mention_count=mentions_after(recipient, chat_id, member.last_read_message_id)
                                          ).where(ChatMember.id == member.id).execute()
            # (id, recipient, whether it was pushed: a silent one never was)
            withdrawn = [(nid, recipient, '"silent":true' not in payload) for nid, recipient, _, payload in withdrawn]
            # Those who had not read up to it counted it as unread: one less.
            counted = [uid for (uid,) in ChatMember.select(ChatMember.user).where(
                (ChatMember.chat == chat_id) & (ChatMember.user != user_id)
                & (ChatMember.last_read_message_id < m.id) & (ChatMember.unread_count > 0)).tuples()]
            if counted:
                ChatMember.update(unread_count=ChatMember.unread_count - 1).where(
                    (ChatMember.chat == chat_id) & ChatMember.user.in_(counted)).execute()
            return eid, {**event, "event_id": eid}, withdrawn, unread_states(set(counted) | {r for _, r, _ in withdrawn})

        eid, event, withdrawn, unread = await self.dbx.write(apply)
        if eid is None:
            return event
        await self.hub.publish(CHAT, members, dumps(event), event_id=eid, chat_id=chat_id)
        for nid, recipient, pushed in withdrawn:
            frame = {"type": "notification_withdrawn", "notification_id": nid, "chat_id": chat_id,
                     "message_id": message_id}
            await self.hub.publish(NOTIFY, [recipient], dumps(frame))
            if pushed:
                self.offer_push(recipient, {**frame, "id": nid})
        await self.notifications.deliver_unread(unread)
        return event

    async def react(self, user_id: int, chat_id, message_id, emoji, add: bool) -> dict:
        """Add (``add``) or remove the caller's ``emoji`` on a message; returns the ``reaction`` event.

        Idempotent: adding an emoji already there, or removing one that is not, changes
        nothing and publishes nothing (the answer says ``changed: false``). Raises
        ValidationError ``invalid_emoji``, NotFound ``message_not_found``, Conflict ``message_deleted``.
        """
        members = await self.require_member(user_id, chat_id)
        chat_id, message_id = require_id(chat_id, "chat_id"), require_id(message_id, "message_id")
        if not is_emoji(emoji):
            raise ValidationError(f"'emoji' must be one emoji of at most {MAX_EMOJI_BYTES} bytes", "invalid_emoji")

        def apply():
            m = self._target(chat_id, message_id)
            if m.deleted_at is not None:
                raise Conflict("The message was deleted", "message_deleted")
            mine = (Reaction.message == m.id) & (Reaction.user == user_id) & (Reaction.emoji == emoji)
            if add:
                changed = not Reaction.select().where(mine).exists()
                if changed:
                    Reaction.insert(message=m.id, user=user_id, emoji=emoji, created_at=utcnow()).execute()
            else:
                changed = Reaction.delete().where(mine).execute() > 0
            count = Reaction.select().where((Reaction.message == m.id) & (Reaction.emoji == emoji)).count()
            event = {"type": REACTION, "chat_id": chat_id, "message_id": m.id, "user_id": user_id,
                     "emoji": emoji, "added": add, "count": count}
            if not changed:
                return None, event
            eid = _insert_change(chat_id, user_id, event)
            return eid, {**event, "event_id": eid}

        try:
            eid, event = await self.dbx.write(apply)
        except peewee.IntegrityError:  # the same reaction added at the same moment by another process
            eid, event = None, {"type": REACTION, "chat_id": chat_id, "message_id": message_id,
                                "user_id": user_id, "emoji": emoji, "added": add}
        if eid is None:
            return {**event, "changed": False}
        await self.hub.publish(CHAT, members, dumps(event), event_id=eid, chat_id=chat_id)
        return {**event, "changed": True}

    @staticmethod
    def replay_frames(rows: List[Message], current: Dict[int, Message]) -> Dict[int, Optional[str]]:
        """The frame of each change row in ``rows`` as replayed (database-free; ``current``: targets).

        An edit is replayed with the message's current content, so an edit stored before a
        delete never brings the erased text back (that edit is replayed as a bare
        ``message_edited`` without content, and the ``message_deleted`` after it follows).
        """
        out: Dict[int, Optional[str]] = {}
        for row in rows:
            event = json.loads(cast(str, row.event))
            event["event_id"] = row.id
            if event["type"] == EDITED:
                target = current.get(event["message_id"])
                if target is not None and target.deleted_at is None:
                    event["content"] = target.content
                    event["edited_at"] = iso(target.edited_at) if target.edited_at else None
                else:
                    event["deleted"] = True
            out[row.id] = dumps(event)
        return out
