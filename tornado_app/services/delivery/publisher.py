"""Group commit for the publish API: notifications that arrive together are stored together.

A backend publishing to single users sends many small requests. Each used to be one
transaction (a user check and an insert); now the requests that arrive while a
transaction runs are stored by the next one: one user check (``SELECT id ... IN``) and
one multi-row ``INSERT ... RETURNING`` for all of them. Every request still gets its own
answer: its ids, or its own error (a request naming an unknown user fails alone). A
notification is committed before its request is answered and before it is delivered.
"""
from __future__ import annotations

import datetime
import logging
from typing import List, Optional, Set, Tuple

from models import Notification, NotificationState, User, is_postgres
from ...errors import NotFound
from ...tasks import Batcher
from ..storage.db import DatabaseExecutor

log = logging.getLogger("squall.publisher")

MAX_REQUESTS = 1000  # publish requests per transaction
ROWS_PER_STATEMENT = 1000  # notification rows per INSERT (4 parameters each: below every limit)
IDS_PER_STATEMENT = 1000  # user ids per existence check


def _placeholder() -> str:
    return "%s" if is_postgres(Notification._meta.database) else "?"


def existing_users(user_ids: List[int]) -> set:
    """Which of ``user_ids`` exist (one statement per thousand). Database thread."""
    found: Set[int] = set()
    if not user_ids:
        return found
    mark = _placeholder()
    table, column = User._meta.table_name, User.id.column_name
    cursor = User._meta.database.cursor()
    for at in range(0, len(user_ids), IDS_PER_STATEMENT):
        chunk = user_ids[at:at + IDS_PER_STATEMENT]
        cursor.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IN ({", ".join([mark] * len(chunk))})',
                       chunk)
        found.update(r[0] for r in cursor.fetchall())
    return found


def insert_rows(rows: List[tuple]) -> List[int]:
    """Insert ``(recipient, type, payload, created_at)`` rows; their ids in order. Inside a transaction.

    The statement text is written out here rather than built by Peewee, which builds one
    parameter at a time (milliseconds for a thousand rows).
    """
    mark = _placeholder()
    meta = Notification._meta
    columns = ", ".join(f'"{getattr(Notification, f).column_name}"' for f in ("recipient", "type", "payload",
                                                                             "created_at"))
    group = f"({mark}, {mark}, {mark}, {mark})"
    cursor = meta.database.cursor()
    ids: List[int] = []
    for at in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[at:at + ROWS_PER_STATEMENT]
        cursor.execute(f'INSERT INTO "{meta.table_name}" ({columns}) VALUES {", ".join([group] * len(chunk))}'
                       f' RETURNING "{Notification.id.column_name}"', [v for row in chunk for v in row])
        # One statement numbers its rows in order; sorting guards against any reordering.
        ids.extend(sorted(r[0] for r in cursor.fetchall()))
    return ids


def hide_broadcasts(hidden: List[Tuple[int, int, datetime.datetime]]) -> None:
    """``(notification id, user id, when)``: that broadcast is read and cleared for that user. Inside a transaction."""
    for at in range(0, len(hidden), ROWS_PER_STATEMENT // 4):
        (NotificationState.insert_many(
            [{"notification": nid, "user": uid, "read_at": when, "cleared_at": when}
             for nid, uid, when in hidden[at:at + ROWS_PER_STATEMENT // 4]])
         .on_conflict_ignore().execute())


def store_batch(batch: List[tuple]) -> list:
    """Store a batch of publishes (writer thread, inside one transaction).

    Each publish is ``(user_ids or None for a broadcast, type, payload or one payload per
    recipient, created_at, recipients[, hidden])``: every one of ``user_ids`` must exist, and
    a row is stored for each of ``recipients`` (default: all of ``user_ids``; fewer when some
    users muted the type). A broadcast's ``hidden`` users (who muted its type) get it as read
    and cleared, so it is neither listed nor replayed to them. Returns, per publish, its
    notification ids or the NotFound that refuses it.
    """
    batch = [tuple(item) + (None,) * (6 - len(item)) for item in batch]
    to_db = Notification.created_at.db_value
    wanted = sorted({u for user_ids, _, _, _, _, hidden in batch for u in (user_ids or hidden or ())})
    found = existing_users(wanted)
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


class PublishWriter:
    """``await store(user_ids | None, type, payload(s), created_at, recipients=None)`` → ids, group-committed."""

    def __init__(self, dbx: DatabaseExecutor) -> None:
        self.dbx = dbx
        # Each item: (user_ids, type, payloads, created_at, recipients, hidden), as store_batch takes it.
        self._batcher: Batcher[tuple, List[int]] = Batcher(self._write, name="publisher.store",
                                                           max_batch=MAX_REQUESTS)
        self.transactions = 0  # commits so far (tests check that concurrent publishes share them)

    async def store(self, user_ids: Optional[List[int]], ntype: str, payloads, created_at: datetime.datetime,
                    recipients: Optional[List[int]] = None, hidden: Optional[List[int]] = None) -> List[int]:
        """Queue one publish; the ids of ``recipients`` (default ``user_ids``) once committed.

        ``payloads`` is one JSON text for all, or one per recipient; ``hidden`` are the users
        a broadcast is stored as read and cleared for. Raises NotFound (any of ``user_ids``
        unknown) or the database's error.
        """
        return await self._batcher.submit((user_ids, ntype, payloads, created_at, recipients, hidden))

    async def _write(self, batch: List[tuple]) -> list:
        """One transaction for ``batch``: per request its ids, or NotFound. Raises the database's error."""
        try:
            results = await self.dbx.write(store_batch, batch)
        except Exception as exc:
            log.warning("storing %d publish requests failed (%s)", len(batch), type(exc).__name__)
            raise
        self.transactions += 1
        return results
