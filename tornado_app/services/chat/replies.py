"""Replies and mentions (issue 25, items 3 and 4).

A send may carry ``reply_to``: the id of a message of the same chat (not a change row); the
message then carries ``reply_to: {id, sender_id, sender_name, content_preview}``, or
``{id, deleted: true}`` once the quoted message is deleted. ``@username`` in the content is
resolved against the chat's members (NFKC + case-fold, as usernames are compared at
registration); the message carries ``mentions: [user ids]``.

Who is *called* by a message: the members it mentions and the sender of the message it
replies to (never the sender themself). Their notification has type ``mention`` and is sent
even when they muted the chat; in Do Not Disturb it is stored silently like any other
(docs/protocol.md, "Replies and mentions"). Nothing here runs for a plain send: the reply
lookup only when ``reply_to`` is given, the member names only when the content has an ``@``.
"""
from __future__ import annotations

import re
from typing import Sequence, Tuple

from models import username_key
from ...errors import ValidationError
from ..storage.db import DatabaseExecutor
from ..storage.ids import is_id
from ..identity.users import UserService
from . import history_store
from .shape import mentions_of, quote  # noqa: F401 (re-exported)

# "@" then a username (users.USERNAME_RE's characters), not inside a word or an e-mail address
MENTION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9_.-]{3,32})")
# Distinct names looked up per message: more @words than this are left as text.
MAX_MENTIONS = 50


class Replies:
    """Checks ``reply_to`` and resolves mentions for a send."""

    def __init__(self, dbx: DatabaseExecutor, users: UserService):
        self.dbx = dbx
        self.users = users

    async def reply_target(self, chat_id: int, reply_to: object) -> Tuple[dict, int]:
        """``(quoted preview, sender of the message replied to)``. Raises ValidationError ``invalid_reply_to``."""
        if not is_id(reply_to):
            raise ValidationError("'reply_to' must be a message id", "invalid_reply_to")
        target = await self.dbx.read(history_store.reply_target, chat_id, reply_to)
        if target is None:
            raise ValidationError(f"'reply_to' must be a message of chat {chat_id}", "invalid_reply_to")
        people = await self.users.get_many([target.sender_id])
        return quote(target, target.id, people.get(target.sender_id, {}).get("display_name", "")), target.sender_id

    async def mentioned(self, members: Sequence[int], content: str) -> Tuple[int, ...]:
        """Members named with ``@username`` in ``content`` (sorted ids; empty without an ``@``)."""
        if "@" not in content:
            return ()
        names = {username_key(n.rstrip(".-")) for n in MENTION_RE.findall(content)}
        if not names:
            return ()
        if len(names) > MAX_MENTIONS:
            names = set(sorted(names)[:MAX_MENTIONS])
        people = await self.users.get_many(members)
        return tuple(sorted(uid for uid, p in people.items() if username_key(p["username"]) in names))
