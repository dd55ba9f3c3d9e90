"""The changes of messages' storage (issue 25): edits, deletes for everyone, reactions.

Every statement ``MessageChanges`` (``edits.py``) runs lives here, called on a database thread
(the writes inside the transaction ``DatabaseExecutor.write`` opens). A change is a *change
row*: a row of ``message`` with ``event`` set (its JSON) and no content, whose id is the event's
id (``edits.py`` explains why). The checks that need the stored row (sender, system message,
edit window, deleted) are made here, in the change's transaction.
"""
from __future__ import annotations

import datetime
import json
from typing import Dict, Iterable, List, Optional, Tuple, cast

from models import SYSTEM_MESSAGE, ChatMember, Message, Notification, Reaction, Upload, tuples, utcnow
from ...errors import Conflict, Forbidden, NotFound
from ..delivery.events import dumps, iso
from ..delivery.notification_store import unread_states
from ..delivery.notifications import content_preview

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


def _target(chat_id: int, message_id: int) -> Message:
    """The message (not a change row) ``message_id`` of ``chat_id``. Raises NotFound."""
    m = Message.get_or_none((Message.id == message_id) & (Message.chat == chat_id) & Message.event.is_null())
    if m is None:
        raise NotFound(f"Message {message_id} is not in chat {chat_id}", "message_not_found")
    return m


def edit_message(user_id: int, chat_id: int, message_id: int, text: str, window: int
                 ) -> Tuple[int, dict, List[Tuple[int, int]], str]:
    """Replace the content of ``user_id``'s message (writer thread): ``(event id, event, [(recipient,
    notification id)] of its notifications, their new preview)``.

    Raises NotFound ``message_not_found``, Forbidden ``not_sender`` / ``system_message`` /
    ``edit_window_passed``, Conflict ``message_deleted``.
    """
    m = _target(chat_id, message_id)
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
    rows = list(tuples(Notification.select(Notification.id, Notification.recipient, Notification.payload)
                       .where((Notification.message_id == m.id) & Notification.type.in_(NOTIFIED))))
    for nid, _, payload in rows:
        body = json.loads(payload)
        body["content_preview"] = preview
        Notification.update(payload=dumps(body)).where(Notification.id == nid).execute()
    return eid, {**event, "event_id": eid, "content": text, "edited_at": iso(now)}, \
        [(recipient, nid) for nid, recipient, _ in rows], preview


def delete_message(user_id: int, chat_id: int, message_id: int
                   ) -> Tuple[Optional[int], dict, List[Tuple[int, int, bool]], Dict[int, str]]:
    """Delete ``user_id``'s message for everyone (writer thread): ``(event id, event, withdrawn
    notifications as (id, recipient, pushed), unread frames)``; event id None when it was deleted already.

    Content erased, attachments detached, reactions dropped, its notifications withdrawn and
    the unread and mention counts corrected. Raises NotFound, Forbidden ``not_sender`` / ``system_message``.
    """
    m = _target(chat_id, message_id)
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
    rows = list(tuples(Notification.select(Notification.id, Notification.recipient, Notification.type,
                                           Notification.payload)
                       .where((Notification.message_id == m.id) & Notification.type.in_(NOTIFIED))))
    if rows:
        Notification.delete().where(Notification.id.in_([nid for nid, _, _, _ in rows])).execute()
    for _, recipient, ntype, _ in rows:
        if ntype == "mention":  # recounted: the read position decides what is still unread
            member = ChatMember.get_or_none((ChatMember.chat == chat_id) & (ChatMember.user == recipient))
            if member is not None:
                ChatMember.update(mention_count=mentions_after(recipient, chat_id, member.last_read_message_id)
                                  ).where(ChatMember.id == member.id).execute()
    # (id, recipient, whether it was pushed: a silent one never was)
    withdrawn = [(nid, recipient, '"silent":true' not in payload) for nid, recipient, _, payload in rows]
    # Those who had not read up to it counted it as unread: one less.
    counted = [uid for (uid,) in tuples(ChatMember.select(ChatMember.user).where(
        (ChatMember.chat == chat_id) & (ChatMember.user != user_id)
        & (ChatMember.last_read_message_id < m.id) & (ChatMember.unread_count > 0)))]
    if counted:
        ChatMember.update(unread_count=ChatMember.unread_count - 1).where(
            (ChatMember.chat == chat_id) & ChatMember.user.in_(counted)).execute()
    return eid, {**event, "event_id": eid}, withdrawn, unread_states(set(counted) | {r for _, r, _ in withdrawn})


def react(user_id: int, chat_id: int, message_id: int, emoji: str, add: bool) -> Tuple[Optional[int], dict]:
    """Add (``add``) or remove ``user_id``'s ``emoji`` on a message (writer thread): ``(event id, event)``;
    event id None when nothing changed. Raises NotFound, Conflict ``message_deleted``,
    ``peewee.IntegrityError`` when another process added the same reaction meanwhile.
    """
    m = _target(chat_id, message_id)
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
