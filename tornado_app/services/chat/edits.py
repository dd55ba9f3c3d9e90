"""Changes of a sent message (issue 25): edit, delete for everyone, reactions.

Every change is an event of the chat stream with an id of its own, taken from the message
table's ids: a *change row* is a row of ``message`` with ``event`` set (the event's JSON,
never any content) and empty content. So a change is ordered among the messages exactly as
it happened, is replayed on resume by the same query as the messages (``replay``), and old
clients' cursors (message ids) keep working. History, unread counts, quotas and previews skip
change rows (``Message.event IS NULL``). docs/architecture.md, "Message changes are events".
The statements, and the checks that need the stored row, are in ``change_store.py``.

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

from typing import Awaitable, Callable, Optional, Sequence, Tuple

import peewee

from ...errors import ValidationError
from ..delivery.events import CHAT, NOTIFY, dumps
from ..delivery.hub import Hub
from ..delivery.notifications import NotificationService
from ..storage.db import DatabaseExecutor
from ..storage.ids import require_id
from . import change_store as store
from .change_store import DELETED, EDITED, MAX_REACTION_USERS, NOTIFIED, REACTION  # noqa: F401 (re-exported)
from .emoji import MAX_EMOJI_BYTES, is_emoji


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

    async def edit(self, user_id: int, chat_id, message_id, content) -> dict:
        """Replace the content of the caller's message; returns the ``message_edited`` event.

        Raises ValidationError (content as for a send), NotFound ``message_not_found``,
        Forbidden ``not_sender`` / ``edit_window_passed``, Conflict ``message_deleted``.
        """
        members = await self.require_member(user_id, chat_id)
        chat_id, message_id = require_id(chat_id, "chat_id"), require_id(message_id, "message_id")
        text, _, _ = self.validate_content({"content": content})

        eid, event, notified, preview = await self.dbx.write(store.edit_message, user_id, chat_id, message_id, text,
                                                             self.edit_window)
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

        eid, event, withdrawn, unread = await self.dbx.write(store.delete_message, user_id, chat_id, message_id)
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

        try:
            eid, event = await self.dbx.write(store.react, user_id, chat_id, message_id, emoji, add)
        except peewee.IntegrityError:  # the same reaction added at the same moment by another process
            eid, event = None, {"type": REACTION, "chat_id": chat_id, "message_id": message_id,
                                "user_id": user_id, "emoji": emoji, "added": add}
        if eid is None:
            return {**event, "changed": False}
        await self.hub.publish(CHAT, members, dumps(event), event_id=eid, chat_id=chat_id)
        return {**event, "changed": True}

    # database-free: what replay sends for each change row (change_store.replay_frames)
    replay_frames = staticmethod(store.replay_frames)
