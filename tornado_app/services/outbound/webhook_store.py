"""The webhook outbox's storage: the fast paths of the send path's transaction (issue 23).

``message_rows`` (webhooks.py) queues ``message.created`` for every message of a group
commit, inside its transaction: three reads for the whole batch and one multi-row insert
per few hundred rows, written out (``storage.sql``) rather than built by Peewee a
parameter at a time, which for hundreds of messages cost more than the queries.
Writer thread.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Set, Tuple

from models import Chat, ChatMember, User, WebhookEvent
from ..storage.sql import IN_CHUNK, insert_values, quote, select_in

INSERT_COLUMNS = ("event_id", "type", "ordering_key", "body", "status", "attempts", "next_attempt_at",
                  "window_start", "lease_until", "leased_by", "last_error", "created_at")
ROWS_PER_INSERT = 300


def _columns(model, *fields: str) -> str:
    return ", ".join(quote(getattr(model, f).column_name) for f in fields)


def message_context(chat_ids: Set[int], sender_ids: Iterable[int]) -> Tuple[Dict[int, dict], Dict[int, List[int]],
                                                                            Dict[int, dict]]:
    """``(chats, members, people)`` of a batch's messages: three reads for the whole batch.

    ``chats``: ``{id, key, kind}`` by id; ``members``: the member ids of each chat, sorted;
    ``people``: ``{id, username, external_id}`` of the members and ``sender_ids``.
    """
    chat_table, member_table, user_table = (quote(m._meta.table_name) for m in (Chat, ChatMember, User))
    chats = {cid: {"id": cid, "key": key, "kind": kind} for cid, kind, key in select_in(
        Chat, f'SELECT {_columns(Chat, "id", "kind", "external_key")} FROM {chat_table} '
              f'WHERE {_columns(Chat, "id")} IN ({{}})', chat_ids, IN_CHUNK)}
    members: Dict[int, List[int]] = {cid: [] for cid in chat_ids}
    for cid, uid in sorted(select_in(
            ChatMember, f'SELECT {_columns(ChatMember, "chat", "user")} FROM {member_table} '
                        f'WHERE {_columns(ChatMember, "chat")} IN ({{}})', chat_ids, IN_CHUNK)):
        members[cid].append(uid)
    user_ids = {uid for ms in members.values() for uid in ms} | set(sender_ids)
    people = {uid: {"id": uid, "username": name, "external_id": ext} for uid, name, ext in select_in(
        User, f'SELECT {_columns(User, "id", "username", "external_id")} FROM {user_table} '
              f'WHERE {_columns(User, "id")} IN ({{}})', user_ids, IN_CHUNK)}
    return chats, members, people


def insert_events(rows: List[dict]) -> None:
    """Insert outbox rows (dicts over ``INSERT_COLUMNS``) with multi-row INSERTs, not Peewee's insert_many."""
    insert_values(WebhookEvent, INSERT_COLUMNS, [[row[c] for c in INSERT_COLUMNS] for row in rows], ROWS_PER_INSERT)
