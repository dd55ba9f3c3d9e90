"""The messages aggregate's reads, and the read positions: history, replay, chat summaries.

Called on a database thread by ``ChatService`` (``service.py``), ``Replies`` and
``MessageSearch``; ``store_read`` on the writer thread, inside its transaction. Change rows
(``event`` set: edits, deletes, reactions) are not messages: history, summaries and unread
counts skip them, replay sends them as their events (``change_store.replay_frames``).
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import peewee

from models import Chat, ChatDeparture, ChatMember, Message, Notification, tuples, utcnow
from ...errors import NotFound, ValidationError
from ..delivery.notification_store import unread_states
from .change_store import mentions_after, reactions_of, replay_frames
from .shape import Extras
from .uploads import UploadService

# ``(user_id, chat_id, position)``: called in the transaction that moved a read position forward
OnReadStored = Callable[[int, int, int], None]


# The extras of a page of messages ---------------------------------------------------------

def targets_of(rows: Sequence[Message]) -> Dict[int, Message]:
    """The messages replied to by ``rows``, by id (one query; none when no row is a reply)."""
    ids = {m.reply_to_id for m in rows if m.reply_to_id is not None}
    if not ids:
        return {}
    return {m.id: m for m in Message.select(Message.id, Message.sender, Message.content, Message.deleted_at)
            .where(Message.id.in_(list(ids)))}


def load_extras(rows: Sequence[Message], with_reactions: bool = True) -> Extras:
    """The attachments, reactions (unless not ``with_reactions``) and reply targets of ``rows``.

    One query each, none for a kind no row has (replies) or when ``rows`` is empty.
    """
    if not rows:
        return Extras()
    ids = [m.id for m in rows]
    return Extras(UploadService.attachments_of(ids), reactions_of(ids) if with_reactions else {}, targets_of(rows))


def reply_target(chat_id: int, message_id: object) -> Optional[Message]:
    """The message ``message_id`` of ``chat_id`` a send replies to (not a change row), or None."""
    return Message.get_or_none((Message.id == message_id) & (Message.chat == chat_id) & Message.event.is_null())


# History and replay -------------------------------------------------------------------------

def history_page(chat_id: int, before_id: Optional[int], limit: int) -> Tuple[List[Message], Extras]:
    """Up to ``limit`` messages of ``chat_id`` before ``before_id`` (oldest first) and their extras."""
    q = (Message.select().where((Message.chat == chat_id) & Message.event.is_null())
         .order_by(Message.id.desc()).limit(limit))
    if before_id is not None:
        q = q.where(Message.id < before_id)
    rows = list(q)[::-1]
    return rows, load_extras(rows)


def replay_rows(user_id: int, after_id: int, limit: int) -> Tuple[List[Message], Extras, Dict[int, Optional[str]]]:
    """The rows of ``user_id``'s chats after ``after_id`` (at most ``limit + 1``), in id order.

    With the messages' extras and the frames of the change rows; when there are more than
    ``limit`` rows (the caller answers ``resync``) neither is loaded.
    """
    chat_ids = ChatMember.select(ChatMember.chat).where(ChatMember.user == user_id)
    rows = list(Message.select().where(Message.chat.in_(chat_ids) & (Message.id > after_id))
                .order_by(Message.id).limit(limit + 1))
    if len(rows) > limit:
        return rows, Extras(), {}
    plain = [m for m in rows if m.event is None]
    changed = [m for m in rows if m.event is not None]
    edited = {json.loads(cast(str, m.event))["message_id"] for m in changed if m.message_type == "message_edited"}
    current = {m.id: m for m in Message.select().where(Message.id.in_(list(edited)))} if edited else {}
    return rows, load_extras(plain), replay_frames(changed, current)


def latest_message_id() -> int:
    """The highest message id stored (0 when none)."""
    return Message.select(peewee.fn.MAX(Message.id)).scalar() or 0


# Chat summaries ------------------------------------------------------------------------------

# ``(chats, members per chat, role per (chat, user), last messages, their extras,
#    {chat id: (left at, last message id)} of the chats left)``
Summaries = Tuple[List[Chat], Dict[int, List[int]], Dict[Tuple[int, int], str], Dict[int, Message], Extras,
                  Dict[int, Tuple[datetime.datetime, int]]]


def summaries(user_id: int, only: Optional[List[int]], limit: Optional[int], before: Optional[int],
              former: bool) -> Summaries:
    """What the summaries of a page of ``user_id``'s chats need, most recent activity first.

    ``only``: just these chats; ``before``: the page continues after this chat (ValidationError
    when it is not one of the user's); ``former``: the groups the user left come too, placed
    by their departure, with their departure's message as their last one.
    """
    q = (Chat.select(Chat, ChatMember.unread_count, ChatMember.muted_until)
         .join(ChatMember, on=(ChatMember.chat == Chat.id))
         .where(ChatMember.user == user_id)
         .order_by(Chat.last_activity_at.desc(), Chat.id.desc()))
    # the groups left: one more query, on the (user, chat) index of chat_departure
    fq = (Chat.select(Chat, ChatDeparture.left_at, ChatDeparture.last_message_id.alias("departed_at_id"))
          .join(ChatDeparture, on=(ChatDeparture.chat == Chat.id))
          .where(ChatDeparture.user == user_id)
          .order_by(ChatDeparture.left_at.desc(), Chat.id.desc()))
    if only is not None:
        q = q.where(Chat.id.in_(only))
        fq = fq.where(Chat.id.in_(only))
    if before is not None:
        mark = (Chat.select(Chat.last_activity_at).join(ChatMember, on=(ChatMember.chat == Chat.id))
                .where((Chat.id == before) & (ChatMember.user == user_id)).tuples().first())
        if mark is None and former:
            mark = (ChatDeparture.select(ChatDeparture.left_at)
                    .where((ChatDeparture.chat == before) & (ChatDeparture.user == user_id)).tuples().first())
        if mark is None:
            raise ValidationError("'before' must be the id of one of your chats")
        q = q.where((Chat.last_activity_at < mark[0])
                    | ((Chat.last_activity_at == mark[0]) & (Chat.id < before)))
        fq = fq.where((ChatDeparture.left_at < mark[0])
                      | ((ChatDeparture.left_at == mark[0]) & (Chat.id < before)))
    if limit is not None:
        q = q.limit(limit)
        fq = fq.limit(limit)
    chats = list(q.objects())
    left: Dict[int, Tuple[datetime.datetime, int]] = {}
    if former:
        gone: List[Any] = list(fq.objects())  # Chat rows with the departure's two columns
        left = {c.id: (c.left_at, c.departed_at_id) for c in gone}
        # the newest of both lists (activity for a member, the departure for a former member)
        chats = sorted(chats + gone, key=lambda c: (left[c.id][0] if c.id in left else c.last_activity_at,
                                                    c.id), reverse=True)[:limit]
    ids = [c.id for c in chats if c.id not in left]
    members: Dict[int, List[int]] = {i: [] for i in ids}
    roles: Dict[Tuple[int, int], str] = {}
    if ids:
        for cid, uid, role in tuples(ChatMember.select(ChatMember.chat, ChatMember.user, ChatMember.role)
                                     .where(ChatMember.chat.in_(ids)).order_by(ChatMember.id)):
            members[cid].append(uid)
            roles[(cid, uid)] = role
    # a former member's last message is the one of their departure: nothing later shows
    last_ids = [left[c.id][1] if c.id in left else c.last_message_id for c in chats]
    last_ids = [i for i in last_ids if i]
    last = {m.id: m for m in Message.select().where(Message.id.in_(last_ids))} if last_ids else {}
    # a chat's last message without its reactions: a preview in the list
    return chats, members, roles, last, load_extras(list(last.values()), with_reactions=False), left


# Read positions ------------------------------------------------------------------------------

def message_in_chat(chat_id: int, message_id: int) -> bool:
    """True when message ``message_id`` is one of ``chat_id``'s rows."""
    return Message.select(Message.id).where((Message.id == message_id) & (Message.chat == chat_id)).exists()


def store_read(user_id: int, chat_id: int, message_id: int,
               on_read_stored: Optional[OnReadStored] = None) -> Tuple[int, Dict[int, str]]:
    """Move ``user_id``'s read position in ``chat_id`` forward to ``message_id`` (writer thread).

    The unread count becomes the messages of others after the position (change rows and
    deleted messages left out), the notifications up to it are read, the mentions after it
    stay counted. ``on_read_stored`` (the webhook outbox) hears of a position that moved.
    Returns ``(position, the user's unread frame)``. Raises NotFound ``message_not_found``.
    """
    msg = Message.get_or_none((Message.id == message_id) & (Message.chat == chat_id))
    if msg is None:
        raise NotFound(f"Message {message_id} is not in chat {chat_id}", "message_not_found")
    member = ChatMember.get((ChatMember.chat == chat_id) & (ChatMember.user == user_id))
    position = max(member.last_read_message_id, message_id)
    if on_read_stored is not None and position > member.last_read_message_id:
        on_read_stored(user_id, chat_id, position)
    unread = (Message.select().where((Message.chat == chat_id) & (Message.id > position)
                                     & (Message.sender != user_id) & Message.event.is_null()
                                     & Message.deleted_at.is_null()).count())
    ChatMember.update(last_read_message_id=position, unread_count=unread).where(
        ChatMember.id == member.id).execute()
    Notification.update(read_at=utcnow()).where(
        (Notification.recipient == user_id) & (Notification.chat_id == chat_id)
        & (Notification.message_id <= position) & Notification.read_at.is_null()).execute()
    if member.mention_count:  # the mentions after the new position stay counted
        ChatMember.update(mention_count=mentions_after(user_id, chat_id, position)).where(
            ChatMember.id == member.id).execute()
    return position, unread_states([user_id])
