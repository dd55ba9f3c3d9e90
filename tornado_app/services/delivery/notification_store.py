"""The notifications aggregate's storage: every statement of notifications and unread state.

Called on a database thread (the writes inside a transaction) by ``NotificationService``
(replay, history, read and cleared state, retention),
``PublishWriter`` (the publish API's group commit), ``OpenStateBatcher`` (a stream's first
frames), the chat's group commit and the changes of messages and groups. The fast paths
(``IN`` lists of ids, multi-row ``INSERT ... RETURNING`` written out) go through
``storage.sql``, which holds the dialect differences.
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Dict, Iterable, List, Optional, Tuple

import peewee

from models import ChatMember, Notification, NotificationState, Setting, User, tuples, utcnow
from ...errors import NotFound
from ..storage.sql import insert_values, quote, select_in, snapshot
from .events import dumps

ROWS_PER_STATEMENT = 1000  # notification rows per INSERT (4 parameters each: below every limit)
IDS_PER_STATEMENT = 1000  # user ids per existence check
PRUNED_KEY = "notifications_pruned_through"  # setting: the newest notification id pruned


def frame(notification_id: int, payload: str) -> str:
    """The stream frame of a stored notification: its payload with ``id`` first."""
    return '{"id":%d,%s' % (notification_id, payload[1:]) if payload != "{}" else '{"id":%d}' % notification_id


def silent(payload: str) -> str:
    """A stored payload marked ``"silent": true`` (Do Not Disturb: no toast, sound or push)."""
    return payload[:-1] + ',"silent":true}'


def _muted_now(value, now: datetime.datetime, now_text: str) -> bool:
    # chat_member.muted_until as a raw query returns it: a datetime, or text on SQLite
    if value is None:
        return False
    return value > now_text if isinstance(value, str) else value > now


@functools.lru_cache(maxsize=None)
def _unread_sql() -> str:
    """The chats with unread messages of a list of users (``IN ({})``), written out once: Peewee
    took about 100 µs to build it, more than SQLite takes to run it for one user (every
    stream open reads its user's state here)."""
    c = {f: quote(getattr(ChatMember, f).column_name) for f in ("user", "chat", "unread_count", "muted_until",
                                                               "mention_count")}
    return (f"SELECT {c['user']}, {c['chat']}, {c['unread_count']}, {c['muted_until']}, {c['mention_count']}"
            f" FROM {quote(ChatMember._meta.table_name)} WHERE {c['user']} IN ({{}}) AND {c['unread_count']} > 0")


def unread_states(user_ids: Iterable[int]) -> Dict[int, str]:
    """The ``unread`` frame of each user (one query for all). Call on a database thread.

    Counts of muted chats are left out of ``total`` (the red dot) and listed in ``muted``.
    ``mentions`` (only when some chat has any): unread mentions and replies to the user per chat.
    """
    user_ids = list(set(user_ids))
    counts: Dict[int, Dict[str, int]] = {uid: {} for uid in user_ids}
    muted: Dict[int, Dict[str, int]] = {uid: {} for uid in user_ids}
    mentions: Dict[int, Dict[str, int]] = {uid: {} for uid in user_ids}
    now = utcnow()
    now_text = str(now)
    if user_ids:
        rows = select_in(ChatMember, _unread_sql(), user_ids)
        for uid, chat_id, n, muted_until, mentioned in rows:
            counts[uid][str(chat_id)] = n
            if mentioned:
                mentions[uid][str(chat_id)] = mentioned
            if _muted_now(muted_until, now, now_text):
                muted[uid][str(chat_id)] = n
    # "muted" only when some muted chat has unread messages (most frames stay as they were)
    return {uid: dumps({"type": "unread", "total": sum(c.values()) - sum(muted[uid].values()), "chats": c,
                        **({"muted": muted[uid]} if muted[uid] else {}),
                        **({"mentions": mentions[uid]} if mentions[uid] else {})})
            for uid, c in counts.items()}


def insert_notifications(rows: List[dict]) -> List[int]:
    """Insert notification rows and return their ids, in order. Call inside a transaction."""
    if not rows:
        return []
    # One INSERT ... RETURNING for all rows (SQLite >= 3.35 and PostgreSQL).
    cursor = Notification.insert_many(rows).returning(Notification.id).execute()
    return [r[0] if isinstance(r, tuple) else r.id for r in cursor]


@functools.lru_cache(maxsize=None)
def _latest_sql() -> Tuple[str, str, str]:
    """The quoted names ``latest_ids`` reads: the notification table, its id and its recipient."""
    return (quote(Notification._meta.table_name), quote(Notification.id.column_name),
            quote(Notification.recipient.column_name))


def latest_ids(user_ids: List[int]) -> Dict[int, int]:
    """The newest notification id each user can see (0 when none): one grouped query. Database thread."""
    if not user_ids:
        return {}
    table, nid, recipient = _latest_sql()
    db = Notification._meta.database
    broadcast = db.execute_sql(f"SELECT MAX({nid}) FROM {table} WHERE {recipient} IS NULL").fetchone()[0] or 0
    rows = select_in(Notification, f"SELECT {recipient}, MAX({nid}) FROM {table} WHERE {recipient} IN ({{}})"
                                   f" GROUP BY {recipient}", user_ids)
    personal = dict(rows)
    return {uid: max(broadcast, personal.get(uid) or 0) for uid in user_ids}


def existing_users(user_ids: List[int]) -> set:
    """Which of ``user_ids`` exist (one statement per thousand). Database thread."""
    if not user_ids:
        return set()
    table, column = quote(User._meta.table_name), quote(User.id.column_name)
    return {r[0] for r in select_in(User, f"SELECT {column} FROM {table} WHERE {column} IN ({{}})", user_ids,
                                    IDS_PER_STATEMENT)}


def insert_rows(rows: List[tuple]) -> List[int]:
    """Insert ``(recipient, type, payload, created_at)`` rows; their ids in order. Inside a transaction.

    The statement text is written out here rather than built by Peewee, which builds one
    parameter at a time (milliseconds for a thousand rows).
    """
    columns = [getattr(Notification, f).column_name for f in ("recipient", "type", "payload", "created_at")]
    return insert_values(Notification, columns, rows, ROWS_PER_STATEMENT, returning=True)


def hide_broadcasts(hidden: List[Tuple[int, int, datetime.datetime]]) -> None:
    """``(notification id, user id, when)``: that broadcast is read and cleared for that user. Inside a transaction."""
    for at in range(0, len(hidden), ROWS_PER_STATEMENT // 4):
        (NotificationState.insert_many(
            [{"notification": nid, "user": uid, "read_at": when, "cleared_at": when}
             for nid, uid, when in hidden[at:at + ROWS_PER_STATEMENT // 4]])
         .on_conflict_ignore().execute())


def store_batch(batch: List[tuple], checked: bool = False) -> list:
    """Store a batch of publishes (writer thread, inside one transaction).

    Each publish is ``(user_ids or None for a broadcast, type, payload or one payload per
    recipient, created_at, recipients[, hidden])``: every one of ``user_ids`` must exist, and
    a row is stored for each of ``recipients`` (default: all of ``user_ids``; fewer when some
    users muted the type). A broadcast's ``hidden`` users (who muted its type) get it as read
    and cleared, so it is neither listed nor replayed to them. Returns, per publish, its
    notification ids or the NotFound that refuses it.

    Unless ``checked``, the users of targeted publishes are not looked up first: the foreign key
    of ``notification.recipient`` refuses an unknown one (IntegrityError; PostgreSQL's DataError
    for an id past its integer column; the whole transaction rolled back), and the caller stores
    the batch again ``checked``, which refuses only the
    requests naming one. One statement less per transaction on the usual path (a PostgreSQL
    round trip, and the writer thread's wait for the GIL after it, cost more than the lookup).
    """
    batch = [tuple(item) + (None,) * (6 - len(item)) for item in batch]
    to_db = Notification.created_at.db_value
    targeted = {u for user_ids, _, _, _, _, _ in batch for u in user_ids or ()}
    hiding = {u for user_ids, _, _, _, _, hidden in batch if user_ids is None for u in hidden or ()}
    if checked:
        found = existing_users(sorted(targeted | hiding))
    else:
        found = targeted | existing_users(sorted(hiding))
    rows: List[tuple] = []
    spans: list = []
    hides: list = []  # (index of the row, user id, when)
    for user_ids, ntype, payloads, created_at, recipients, hidden in batch:
        created = to_db(created_at)
        if user_ids is None:
            recipients = [None]
            # a user deleted since the preferences were read has nothing left to hide
            hides.extend((len(rows), u, created_at) for u in hidden or () if u in found)
        else:
            unknown = [u for u in user_ids if u not in found]
            if unknown:
                spans.append(NotFound(f"Unknown user ids: {unknown[:20]}", "user_not_found"))
                continue
            recipients = user_ids if recipients is None else recipients
        if isinstance(payloads, str):
            payloads = [payloads] * len(recipients)
        spans.append((len(rows), len(rows) + len(recipients)))
        rows.extend((u, ntype, p, created) for u, p in zip(recipients, payloads))
    ids = insert_rows(rows) if rows else []
    if hides:
        hide_broadcasts([(ids[row], uid, when) for row, uid, when in hides])
    return [span if isinstance(span, Exception) else ids[span[0]:span[1]] for span in spans]


# Replay, history, state and retention (NotificationService) -----------------------------------

def replay(user_id: int, after_id: int, limit: int, quiet: bool) -> Optional[List[Tuple[int, str]]]:
    """Frames of ``user_id``'s notifications after ``after_id`` in order; None past the pruned ones or ``limit``.

    Broadcasts the user cleared are left out; ``quiet`` (Do Not Disturb) makes broadcasts silent.
    Personal ones and broadcasts are read in one snapshot: read apart, a personal notification
    committed between the two reads could be missed by the replay while a broadcast committed
    after it is in, and the live copy of the first would then follow the second.
    """
    with snapshot(Notification):
        return _replay(user_id, after_id, limit, quiet)


def _replay(user_id: int, after_id: int, limit: int, quiet: bool) -> Optional[List[Tuple[int, str]]]:
    pruned = Setting.get_or_none(Setting.key == PRUNED_KEY)
    if pruned is not None and after_id < int(pruned.value):
        return None
    personal = list(tuples(Notification.select(Notification.id, Notification.payload)
                           .where((Notification.recipient == user_id) & (Notification.id > after_id)
                                  & Notification.cleared_at.is_null())
                           .order_by(Notification.id).limit(limit + 1)))
    broadcasts = list(tuples(Notification.select(Notification.id, Notification.payload)
                             .join(NotificationState, peewee.JOIN.LEFT_OUTER,
                                   on=((NotificationState.notification == Notification.id)
                                       & (NotificationState.user == user_id)))
                             .where(Notification.recipient.is_null() & (Notification.id > after_id)
                                    & NotificationState.cleared_at.is_null())
                             .order_by(Notification.id).limit(limit + 1)))
    if quiet:
        broadcasts = [(nid, silent(payload)) for nid, payload in broadcasts]
    rows = sorted(personal + broadcasts)
    if len(rows) > limit:
        return None
    return [(nid, frame(nid, payload)) for nid, payload in rows]


def history(user_id: int, before_id: Optional[int], limit: int) -> List[dict]:
    """The user's notifications (personal and broadcast, not cleared) before ``before_id``, newest first."""
    q = (Notification.select(Notification, NotificationState.read_at.alias("b_read"))
         .join(NotificationState, peewee.JOIN.LEFT_OUTER,
               on=((NotificationState.notification == Notification.id)
                   & (NotificationState.user == user_id)))
         .where(((Notification.recipient == user_id) & Notification.cleared_at.is_null())
                | (Notification.recipient.is_null() & NotificationState.cleared_at.is_null()))
         .where(Notification.type != "test")  # the test page's probes are not listed (issue 11)
         .order_by(Notification.id.desc()).limit(limit))
    if before_id is not None:
        q = q.where(Notification.id < before_id)
    out = []
    n: Any
    for n in q.objects():
        item = json.loads(frame(n.id, n.payload))
        read_at = n.read_at if n.recipient_id is not None else n.b_read
        item["read"] = read_at is not None
        out.append(item)
    return out


def set_state(user_id: int, ids: Optional[list], field: str, ntype: Optional[str], now: datetime.datetime) -> int:
    """Set ``field`` (``read_at``, ``cleared_at``) to ``now`` on all or the given notifications of ``user_id``
    (of type ``ntype`` only when given; broadcasts: one state row per user and notification). How many."""
    column = getattr(Notification, field)
    q = Notification.update({column: now}).where(
        (Notification.recipient == user_id) & column.is_null())
    if ids is not None:
        q = q.where(Notification.id.in_(ids))
    if ntype is not None:
        q = q.where(Notification.type == ntype)
    changed = q.execute()
    # broadcasts: one state row per user and notification touched
    bq = Notification.select(Notification.id).where(Notification.recipient.is_null())
    if ids is not None:
        bq = bq.where(Notification.id.in_(ids))
    if ntype is not None:
        bq = bq.where(Notification.type == ntype)
    bids = [nid for (nid,) in tuples(bq)]
    if bids:
        rows = [{"user": user_id, "notification": nid, field: now} for nid in bids]
        (NotificationState.insert_many(rows)
         .on_conflict(conflict_target=[NotificationState.user, NotificationState.notification],
                      update={getattr(NotificationState, field): now}).execute())
        changed += len(bids)
    return changed


def prune_before(cutoff: datetime.datetime) -> int:
    """Delete the notifications created before ``cutoff`` (and their state rows); how many.

    Remembers the newest id deleted (``PRUNED_KEY``): a replay from before it answers None (resync).
    """
    newest = (Notification.select(peewee.fn.MAX(Notification.id))
              .where(Notification.created_at < cutoff).scalar())
    if newest is None:
        return 0
    NotificationState.delete().where(NotificationState.notification <= newest).execute()
    deleted = Notification.delete().where(Notification.id <= newest).execute()
    Setting.insert(key=PRUNED_KEY, value=str(newest)).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: str(newest)}).execute()
    return deleted


def latest_id(user_id: int) -> int:
    """The newest notification id visible to ``user_id`` (0 when none)."""
    return (Notification.select(peewee.fn.MAX(Notification.id))
            .where((Notification.recipient == user_id) | Notification.recipient.is_null())
            .scalar() or 0)
