"""The messages aggregate's storage: messages, their counters, and the members of chats.

Every statement the chat writes or reads on its hot paths lives here, called on a database
thread (the writes inside the transaction ``DatabaseExecutor.write`` opens):

- ``store_sends``: a group commit's batch of sends (messages, unread and read counters, the
  chats' last message, notifications, mentions, attachments, the webhook outbox) in a
  handful of set-wise statements (``storage.sql``: the written-out fast paths, with the
  SQLite/PostgreSQL differences), each send failing alone when the database refuses it.
  It is the one path that stores a message: the system messages of group changes
  (``group_store.store_system``) go through it too, as a batch of one in the change's
  transaction;
- ``search_rows``: full-text search over the messages of a user's chats.

The other stores of the chat: ``group_store`` (chats and their members, group changes),
``history_store`` (history, replay, summaries, read positions), ``change_store`` (edits,
deletes, reactions).

Messages with an ``event`` (change rows: edits, deletes, reactions) are events of the chat
stream, not messages: every query over messages skips them (``event IS NULL``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

import peewee

from models import Chat, ChatMember, Message, User, is_postgres, utcnow
from ...errors import NotFound, Unavailable
from ..delivery.events import iso
from ..delivery.notification_store import insert_notifications, unread_states
from ..delivery.notifications import mention_payload, new_message_payload, silent
from ..storage.db import is_unavailable
from ..storage.sql import insert_returning_ids, update_from_values
from .history_store import load_extras
from .shape import message_dict, message_shape, quote
from .uploads import AttachmentTaken, UploadService

log = logging.getLogger("squall.chat")

# The columns a send stores with its one multi-row INSERT (reply and mentions: a rare UPDATE after)
MESSAGE_FIELDS = ("chat", "sender", "content", "message_type", "client_id", "created_at")


# Sends -----------------------------------------------------------------------------------

@dataclass
class SendRequest:
    """One message waiting for the next group commit."""

    chat_id: int
    sender_id: int
    sender_name: str
    content: str
    message_type: str
    client_id: Optional[str]
    notify_ids: List[int]
    others: List[int]
    exclude: Optional[str] = None  # the sending connection: it gets an ack instead
    accepted_at: float = 0.0  # time.time() when queued: send -> commit and send -> delivery latency
    silent_ids: frozenset = frozenset()  # of notify_ids: in Do Not Disturb, their notification is silent
    # Upload ids attached in the message's transaction, and their public shape (checked before queueing)
    attachments: Tuple[str, ...] = ()
    attachment_info: Tuple[dict, ...] = ()
    # Replies and mentions (issue 25; checked before queueing). ``called``: of notify_ids, those
    # mentioned or replied to, whose notification has type "mention" (sent even in a muted chat).
    reply_to: Optional[dict] = None  # the quoted preview of the message replied to
    mentions: Tuple[int, ...] = ()
    called: frozenset = frozenset()
    # A group change's system message (issue 25; ``group_store.store_system``): its structured
    # fields, and the members besides the sender who have read it already (those it adds, the
    # one it removes: it is the last message they may read).
    system: Optional[dict] = None
    readers: Tuple[int, ...] = ()


def _store_extras(req: SendRequest, mid: int) -> None:
    """Reply, mentions and system fields of a send that has them (writer thread; one UPDATE, never
    for a plain send)."""
    fields: Dict[str, object] = {}
    if req.reply_to is not None:
        fields["reply_to_id"] = req.reply_to["id"]
    if req.mentions:
        fields["mentions"] = json.dumps(list(req.mentions))
    if req.system is not None:
        fields["system"] = json.dumps(req.system, separators=(",", ":"))
    Message.update(**fields).where(Message.id == mid).execute()


def _new_message(req: SendRequest, mid: int, created_at: str) -> dict:
    """The shape of a send just stored as message ``mid`` (``message_shape``, from the request's values)."""
    return message_shape(mid, req.chat_id, req.sender_id, req.sender_name, req.content, req.message_type,
                         req.client_id, created_at, reply_to=req.reply_to, mentions=list(req.mentions),
                         attachments=list(req.attachment_info), system=req.system)


def _notification_rows(req: SendRequest, mid: int, message: dict, now) -> List[dict]:
    """The notification rows of a stored send: ``new_message``, or ``mention`` for the called members."""
    payload = new_message_payload(message)
    called = req.called
    mention = mention_payload(message) if called else payload
    rows = []
    for uid in req.notify_ids:
        ntype, p = ("mention", mention) if uid in called else ("new_message", payload)
        rows.append({"recipient": uid, "type": ntype, "payload": silent(p) if uid in req.silent_ids else p,
                     "chat_id": req.chat_id, "message_id": mid, "created_at": now})
    return rows


def _count_mentions(rows: List[dict]) -> None:
    """One more unread mention in the chat for each ``mention`` row (writer thread; rare)."""
    per_member: Dict[Tuple[int, int], int] = {}
    for row in rows:
        if row["type"] == "mention":
            key = (row["chat_id"], row["recipient"])
            per_member[key] = per_member.get(key, 0) + 1
    update_from_values(ChatMember, {"mention_count": "t.{mention_count} + v.n"}, ("n", "c", "u"),
                       "t.{chat} = v.c AND t.{user} = v.u",
                       [(n, chat, uid) for (chat, uid), n in per_member.items()])


@dataclass
class SendResult:
    """What one committed send produced."""

    message: dict
    created: bool
    notifications: List[Tuple[int, int, str]]  # (id, recipient, payload)


# ``[(chat_id, sender_id, message)]`` of the messages a transaction stored: the webhook outbox (issue 23)
Outbox = Callable[[List[Tuple[int, int, dict]]], None]
# What one send of a committed batch came to: its result, or the exception it failed with alone.
Outcome = Union[SendResult, Exception]


def _stored_message(m: Message, sender_name: str) -> dict:
    """A message already stored (a resend's answer) in the shape of history (writer thread; rare)."""
    extras = load_extras([m])
    reply = None
    if m.reply_to_id is not None:
        target = extras.targets.get(m.reply_to_id)
        name = "" if target is None else (User.select(User.display_name).where(User.id == target.sender_id)
                                          .scalar() or "")
        reply = quote(target, m.reply_to_id, name)
    return message_dict(m, sender_name, extras.files.get(m.id), extras.reactions.get(m.id), reply)


def store_sends(batch: List[SendRequest], listeners: Optional[Set[int]] = None,
                outbox: Optional[Outbox] = None) -> Tuple[List[Outcome], Dict[int, str]]:
    """Store a batch of sends (writer thread, inside one transaction): per send its outcome.

    Returns the results and the new ``unread`` frames of the members whose counts
    changed, for those among ``listeners`` (None: all of them). ``outbox`` (webhooks) is
    given each stored message in the same transaction: a message is never stored without it.

    One storage path, ``_store``: the whole batch costs a handful of set-wise statements.
    When the database refuses any of it (a duplicate stored by another process, a deleted
    chat, bad text), that attempt is rolled back to its savepoint and each send is stored
    again by the same path as a batch of one in a savepoint of its own (``_store_alone``),
    so a send that cannot be stored fails alone.
    """
    db = Message._meta.database
    try:
        with db.atomic():
            results, touched = _store(batch, outbox)
    except Exception as exc:
        if is_unavailable(exc):
            raise  # the database is unreachable or locked: every send of the batch fails (store_failed)
        log.debug("storing %d messages together failed; storing them one by one", len(batch), exc_info=True)
        results, touched = _store_alone(batch, outbox)
    if listeners is not None:
        touched &= listeners
    return results, unread_states(touched)


def _store(batch: List[SendRequest], outbox: Optional[Outbox] = None) -> Tuple[List[Outcome], Set[int]]:
    """Store a batch with one statement per kind of row (raises if the database refuses any).

    The members' counters are the database's: every member of a chat but the sender gets
    the chat's new messages as unread (whoever joined or left since the send was checked);
    a sender has read their chat up to their own newest message.
    """
    now = utcnow()
    created_at = iso(now) or ""
    made: Dict[int, SendResult] = {}  # index in the batch -> its result
    # A client_id stored by an earlier batch (a resend after a reconnect) violates the
    # unique (sender, client_id) index: the insert raises and ``_store_alone`` answers
    # with the stored message. No query is spent looking for such rare repeats.
    new: List[int] = []          # indexes of the sends to insert
    repeats: List[Tuple[int, int]] = []  # (index, index of the first send with its client_id)
    first: Dict[Tuple[int, str], int] = {}
    for i, req in enumerate(batch):
        if req.client_id is not None:
            key = (req.sender_id, req.client_id)
            if key in first:
                repeats.append((i, first[key]))
                continue
            first[key] = i
        new.append(i)
    touched_users: Set[int] = set()
    if new:
        rows = [{"chat": batch[i].chat_id, "sender": batch[i].sender_id, "content": batch[i].content,
                 "message_type": batch[i].message_type, "client_id": batch[i].client_id, "created_at": now}
                for i in new]
        ids = insert_returning_ids(Message, MESSAGE_FIELDS, rows)
        in_chat: Dict[int, List[Tuple[int, int]]] = {}  # chat -> (message id, sender) of its new messages
        last_read: Dict[Tuple[int, int], int] = {}  # (chat, sender) -> newest message id
        notify_rows: List[dict] = []
        notify_of: List[Tuple[SendResult, int, str]] = []  # (result, recipient, payload) of each row
        any_mention = False  # some notification of the batch has type "mention"
        for i, mid in zip(new, ids):
            req = batch[i]
            in_chat.setdefault(req.chat_id, []).append((mid, req.sender_id))
            last_read[(req.chat_id, req.sender_id)] = mid
            for reader in req.readers:  # rare: a system message's members who have read it
                last_read[(req.chat_id, reader)] = mid
            if req.attachments:  # rare: the fast path costs one truth test
                UploadService.attach(req.sender_id, req.chat_id, mid, req.attachments)
            if req.reply_to is not None or req.mentions or req.system is not None:  # rare too
                _store_extras(req, mid)
            message = _new_message(req, mid, created_at)
            result = made[i] = SendResult(message, True, [])
            if req.notify_ids:
                if req.called:
                    called_rows = _notification_rows(req, mid, message, now)
                    notify_rows.extend(called_rows)
                    notify_of.extend((result, row["recipient"], row["payload"]) for row in called_rows)
                    any_mention = True
                else:
                    payload = new_message_payload(message)
                    for uid in req.notify_ids:
                        p = silent(payload) if uid in req.silent_ids else payload
                        notify_rows.append({"recipient": uid, "type": "new_message", "payload": p,
                                            "chat_id": req.chat_id, "message_id": mid, "created_at": now})
                        notify_of.append((result, uid, p))
            touched_users.update(req.others)
            touched_users.add(req.sender_id)
        # Every member gets the chat's new messages as unread (one row per chat); then each
        # sender's row (and each reader's) is set: read up to their newest message, what stays
        # unread for them being the later messages of others in this same batch (and the
        # mentions of them read too; those of this batch are counted after this).
        update_from_values(ChatMember, {"unread_count": "t.{unread_count} + v.n"}, ("n", "c"), "t.{chat} = v.c",
                           [(len(sent), chat) for chat, sent in in_chat.items()])
        read_rows = [(mid, sum(1 for m, s in in_chat[chat] if m > mid and s != sender), chat, sender)
                     for (chat, sender), mid in last_read.items()]
        update_from_values(ChatMember, {"last_read_message_id": "v.m", "unread_count": "v.n", "mention_count": "0"},
                           ("m", "n", "c", "u"), "t.{chat} = v.c AND t.{user} = v.u", read_rows)
        update_from_values(Chat, {"last_message_id": "v.m", "last_activity_at": "v.ts"}, ("m", "ts", "c"),
                           "t.{id} = v.c", [(sent[-1][0], now, chat) for chat, sent in in_chat.items()])
        if notify_rows:
            for nid, (result, uid, payload) in zip(insert_notifications(notify_rows), notify_of):
                result.notifications.append((nid, uid, payload))
            if any_mention:
                _count_mentions(notify_rows)
        if outbox is not None:
            outbox([(batch[i].chat_id, batch[i].sender_id, made[i].message) for i in new])
    for i, j in repeats:
        made[i] = SendResult(made[j].message, False, [])
    return [made[i] for i in range(len(batch))], touched_users


def _store_alone(batch: List[SendRequest], outbox: Optional[Outbox] = None) -> Tuple[List[Outcome], Set[int]]:
    """Each send of a refused batch by ``_store`` as a batch of one, in its own savepoint (writer thread).

    A send whose ``(sender, client_id)`` is stored already (by an earlier batch, or another
    process) is answered with the stored message; one the database refuses otherwise fails alone.
    """
    db = Message._meta.database
    results: List[Outcome] = []
    touched_users: Set[int] = set()
    seen: Dict[Tuple[int, str], SendResult] = {}
    for req in batch:
        if req.client_id is not None and (req.sender_id, req.client_id) in seen:
            results.append(SendResult(seen[(req.sender_id, req.client_id)].message, False, []))
            continue
        try:
            with db.atomic():  # a refusal (AttachmentTaken, a constraint) rolls this send back alone
                outcomes, touched = _store([req], outbox)
        except AttachmentTaken as exc:
            results.append(exc)
        except peewee.IntegrityError:
            # the same (sender, client_id) was stored first (an earlier batch, another process);
            # without a client_id there is no such twin (``client_id == None`` would match any
            # earlier message of the sender and acknowledge a send that was not stored)
            existing = None if req.client_id is None else Message.get_or_none(
                (Message.sender == req.sender_id) & (Message.client_id == req.client_id))
            if existing is not None:
                results.append(SendResult(_stored_message(existing, req.sender_name), False, []))
            elif not Chat.select().where(Chat.id == req.chat_id).exists():
                results.append(NotFound("The chat no longer exists", "chat_not_found"))
            else:
                log.error("the database refused a message of user %s in chat %s", req.sender_id, req.chat_id)
                results.append(Unavailable("The message could not be stored", "store_failed"))
        except Exception:
            # Its savepoint is rolled back: this send fails alone, the rest of the batch commits.
            log.exception("storing a message of user %s in chat %s failed", req.sender_id, req.chat_id)
            results.append(Unavailable("The message could not be stored", "store_failed"))
        else:
            result = outcomes[0]
            if req.client_id is not None and isinstance(result, SendResult):
                seen[(req.sender_id, req.client_id)] = result
            touched_users |= touched
            results.append(result)
    return results, touched_users


# Search ----------------------------------------------------------------------------------

# The chats a user may search: theirs, and those they left or were removed from up to the
# system message of their departure (issue 25), never a later message.
CHATS_OF_USER = ('JOIN (SELECT "chat_id", NULL AS "upto" FROM "chat_member" WHERE "user_id" = {p} '
                 'UNION ALL SELECT "chat_id", "last_message_id" FROM "chat_departure" WHERE "user_id" = {p}) cm '
                 'ON cm."chat_id" = m."chat_id" AND (cm."upto" IS NULL OR m."id" <= cm."upto") ')


def search_rows(user_id: int, tsquery: str, fts5: str, chat_id: Optional[int], limit: int,
                offset: int) -> List[Message]:
    """A page of the messages of ``user_id``'s chats matching a query, best first. Database thread.

    ``tsquery`` is the query in PostgreSQL's ``to_tsquery`` syntax, ``fts5`` in SQLite's FTS5
    syntax (each database searches with its own engine). Membership is part of the query
    itself, so a chat the user left is not searched even if a cache has not heard of it yet.
    Change rows have no content, so no word finds them.
    """
    db = Message._meta.database
    columns = ", ".join(f'm."{f.column_name}"' for f in Message._meta.sorted_fields)
    chat_clause = ' AND m."chat_id" = {p}' if chat_id is not None else ""
    if is_postgres(db):
        sql = (f'SELECT {columns} FROM "message" m '
               + CHATS_OF_USER +
               "WHERE m.\"search_vector\" @@ to_tsquery('simple', {p})" + chat_clause +
               " ORDER BY ts_rank(m.\"search_vector\", to_tsquery('simple', {p})) DESC, m.\"id\" DESC "
               "LIMIT {p} OFFSET {p}")
        params: list = [user_id, user_id, tsquery]
        if chat_id is not None:
            params.append(chat_id)
        params += [tsquery, limit, offset]
    else:
        sql = (f'SELECT {columns} FROM "message_fts" f JOIN "message" m ON m."id" = f."rowid" '
               + CHATS_OF_USER +
               'WHERE "message_fts" MATCH {p}' + chat_clause +
               ' ORDER BY bm25("message_fts"), m."id" DESC LIMIT {p} OFFSET {p}')
        params = [user_id, user_id, fts5]
        if chat_id is not None:
            params.append(chat_id)
        params += [limit, offset]
    return list(Message.raw(sql.replace("{p}", db.param), *params))
