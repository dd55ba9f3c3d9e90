"""Stored notifications: creation, live delivery, replay on resume, unread state, retention.

A notification's frame is ``{"id": <notification id>, **payload}``; the payload is stored
as JSON text without the id, so replay and live delivery send the very same bytes.
"""
from __future__ import annotations

import datetime
import json
import logging
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from models import utcnow
from ...errors import RateLimited, ValidationError
from ..storage.db import DatabaseExecutor
from .events import NOTIFY, dumps, iso
from .hub import Hub
from . import notification_store as store
from .notification_store import frame, insert_notifications, silent, unread_states  # noqa: F401 (re-exported)
from .publisher import PublishWriter
from ..storage.ids import require_ids
from ..operations.ratelimit import RateLimiter

if TYPE_CHECKING:  # only for the annotation: the container builds preferences first
    from .preferences import PreferenceService

# ``(user_id, notification frame, silent)``: a notification was delivered (PushService.offer)
Notified = Callable[[int, dict, bool], None]

log = logging.getLogger("squall.notifications")

PREVIEW_CHARS = 100


def content_preview(content: str, limit: int = PREVIEW_CHARS) -> str:
    """The first ~``limit`` characters, cut on a word boundary with '...' when cut."""
    text = " ".join(content.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:!?-") + "..."


def new_message_payload(message: dict) -> str:
    """The stored payload (JSON text, no id) of a new-message notification for ``message``."""
    return dumps({
        "type": "new_message",
        "message": f"New message from {message['sender_name']}",
        "chat_id": message["chat_id"],
        "sender_id": message["sender_id"],
        "sender_name": message["sender_name"],
        "content_preview": content_preview(message["content"]),
        "message_type": message["message_type"],
        "timestamp": message["created_at"],
    })


def mention_payload(message: dict) -> str:
    """The payload of a ``mention`` notification: a message that mentions the recipient or replies to them.

    The same fields as ``new_message`` (issue 25): clients that know only ``new_message`` show it alike.
    """
    return dumps({
        "type": "mention",
        "message": f"{message['sender_name']} mentioned you",
        "chat_id": message["chat_id"],
        "sender_id": message["sender_id"],
        "sender_name": message["sender_name"],
        "content_preview": content_preview(message["content"]),
        "message_type": message["message_type"],
        "timestamp": message["created_at"],
    })


class NotificationService:
    """Creates, delivers, replays and prunes notifications."""

    def __init__(self, dbx: DatabaseExecutor, hub: Hub, preferences: PreferenceService, on_notified: Notified,
                 replay_limit: int = 1000, retention_days: float = 30.0, test_per_minute: int = 30):
        self.dbx = dbx
        self.hub = hub
        self.replay_limit = replay_limit
        self.retention_days = retention_days
        self._test_limiter = RateLimiter(test_per_minute / 60.0, test_per_minute)
        self.preferences = preferences  # muted types and Do Not Disturb (issue 11)
        self.on_notified = on_notified  # the push offer of each delivered notification
        self.publisher = PublishWriter(dbx)  # group commit of the publish API (issue 13)

    # Delivery ---------------------------------------------------------------------------

    async def deliver_stored(self, stored: Sequence[Tuple[int, Optional[int], str]]) -> None:
        """Publish stored notifications ``(id, recipient or None, payload)`` to their streams."""
        self.hub.metrics.notifications_stored += len(stored)
        for nid, recipient, payload in stored:
            await self.hub.publish(NOTIFY, None if recipient is None else (recipient,),
                                   frame(nid, payload), event_id=nid)

    async def deliver_broadcast(self, nid: int, payload: str, muted: List[int], quiet: List[int]) -> None:
        """Publish a stored broadcast to everyone but ``muted``; ``quiet`` (DND) users get it silent."""
        self.hub.metrics.notifications_stored += 1
        await self.hub.publish(NOTIFY, None, frame(nid, payload), event_id=nid, skip_users=muted + quiet)
        if quiet:
            await self.hub.publish(NOTIFY, quiet, frame(nid, silent(payload)), event_id=nid)

    async def deliver_unread(self, states: Dict[int, str]) -> None:
        """Publish each user's ``unread`` frame to all of that user's notification streams."""
        for uid, data in states.items():
            await self.hub.publish(NOTIFY, (uid,), data)

    async def unread_state(self, user_id: int) -> str:
        """The current ``unread`` frame of ``user_id``, read on a reader thread (long-polls, ``GET /api/unread``).

        In a single process it is read after every group commit queued before the stream
        subscribed (``read_after_writes``): commits skip the ``unread`` frames of users with
        no stream (``Hub.listening``), so a stream must not read older state. The read
        itself never takes the writer thread, which only writes.
        """
        if self.hub.broker.distributed:
            return (await self.dbx.read(unread_states, [user_id]))[user_id]
        return (await self.dbx.read_after_writes(unread_states, [user_id]))[user_id]

    # Publish API --------------------------------------------------------------------------

    async def publish(self, body: dict) -> List[int]:
        """Create notifications from a backend's request; returns the created ids (see ``publish_to``)."""
        return (await self.publish_to(body))["ids"]

    async def publish_to(self, body: dict) -> dict:
        """Create notifications from a backend's request: ``{"ids": created, "skipped": user ids}``.

        ``{"user_ids": [...]} | {"broadcast": true}``, ``type`` (default announcement),
        ``message``, an optional ``data`` object and ``push`` (true: Web Push to recipients
        with no open stream). A broadcast is one row for everyone. Users who muted the type
        are skipped (nothing stored; of a broadcast, stored as read and cleared for them);
        users in Do Not Disturb get it with ``"silent": true``. Raises ValidationError,
        NotFound (unknown user ids).
        """
        broadcast = body.get("broadcast", False)
        user_ids = body.get("user_ids")
        ntype = body.get("type", "announcement")
        message = body.get("message")
        data = body.get("data")
        if not isinstance(broadcast, bool):
            raise ValidationError("'broadcast' must be true or false")
        if broadcast == (user_ids is not None):
            raise ValidationError("give either 'user_ids' or 'broadcast': true")
        targets: List[int] = []  # the users of a targeted publish, each once, in order
        if not broadcast:
            given = require_ids(user_ids, "user_ids")
            if not given:
                raise ValidationError("'user_ids' must not be empty")
            targets = list(dict.fromkeys(given))
        if not isinstance(ntype, str) or not ntype or len(ntype) > 64:
            raise ValidationError("'type' must be a string of 1-64 characters")
        if ntype in ("unread", "resync", "new_message"):
            raise ValidationError(f"'type' {ntype!r} is reserved")
        if not isinstance(message, str) or not message.strip() or len(message) > 1000:
            raise ValidationError("'message' must be a non-empty string of at most 1000 characters")
        if data is not None and not isinstance(data, dict):
            raise ValidationError("'data' must be an object")
        push = body.get("push", False)
        if not isinstance(push, bool):
            raise ValidationError("'push' must be true or false")
        now = utcnow()
        payload_obj: Dict[str, object] = {"type": ntype, "message": message, "timestamp": iso(now)}
        if data is not None:
            payload_obj["data"] = data
        payload = dumps(payload_obj)
        if len(payload) > 32 * 1024:
            raise ValidationError("the notification is too large (32 KiB at most)")

        if broadcast:
            skipped, quiet_ids = await self.preferences.broadcast_exceptions(ntype)
            quiet = set(quiet_ids)
        else:
            prefs = await self.preferences.many(targets)
            skipped = [u for u in targets if ntype in prefs[u].muted_types]
            quiet = {u for u in targets if prefs[u].dnd()}
        kept = [u for u in targets if u not in skipped]  # who gets a row of a targeted publish
        recipients: List[Optional[int]] = [None] if broadcast else list(kept)
        payloads = [silent(payload) if r in quiet else payload for r in recipients]
        # Stored with the other publishes of the moment in one transaction (PublishWriter);
        # raises NotFound for unknown user ids (this request alone, muted ones included).
        ids = await self.publisher.store(None if broadcast else targets, ntype, payloads, now,
                                         recipients=None if broadcast else kept,
                                         hidden=skipped if broadcast else None)
        if broadcast and (skipped or quiet):
            await self.deliver_broadcast(ids[0], payload, skipped, sorted(quiet))
        else:
            await self.deliver_stored(list(zip(ids, recipients, payloads)))
        if push and not broadcast:
            for nid, uid in zip(ids, kept):
                self.on_notified(uid, {"id": nid, **payload_obj}, uid in quiet)
        return {"ids": ids, "skipped": skipped}

    async def notify_user(self, user_id: int, ntype: str, message: str, data: Optional[dict] = None) -> dict:
        """Store and deliver one notification to ``user_id`` (used by the test event); returns its frame."""
        payload = dumps({"type": ntype, "message": message, "timestamp": iso(utcnow()),
                         **({"data": data} if data is not None else {})})
        ids = await self.dbx.write(insert_notifications,
                                   [{"recipient": user_id, "type": ntype, "payload": payload}])
        await self.deliver_stored([(ids[0], user_id, payload)])
        return json.loads(frame(ids[0], payload))

    async def send_test(self, user_id: int, sent_at_ms: int) -> dict:
        """A ``test`` notification to ``user_id`` (the test page's probe), rate-limited per user.

        Raises RateLimited (429 with ``retry_after``).
        """
        if not self._test_limiter.allow(user_id):
            raise RateLimited("Too many test notifications; wait a little",
                              retry_after=self._test_limiter.retry_after(user_id))
        return await self.notify_user(user_id, "test", "Test notification", {"sent_at_ms": sent_at_ms})

    # Replay -------------------------------------------------------------------------------

    async def replay(self, user_id: int, after_id: int) -> Optional[List[Tuple[int, str]]]:
        """Frames of ``user_id``'s notifications with id > ``after_id``, in order.

        Returns None when the server can no longer replay that far back (pruned, or more
        than ``replay_limit`` missed): the stream then sends ``resync``. Broadcasts the user
        cleared (or muted: see publish_to) are left out, and are silent while the user is
        in Do Not Disturb, as a targeted notification stored during it is.
        """
        limit = self.replay_limit
        quiet = (await self.preferences.get(user_id)).dnd()

        return await self.dbx.read(store.replay, user_id, after_id, limit, quiet)

    # History and state ----------------------------------------------------------------------

    async def history(self, user_id: int, before_id: Optional[int], limit: int) -> List[dict]:
        """The user's notifications (personal and broadcast, not cleared), newest first."""
        return await self.dbx.read(store.history, user_id, before_id, limit)

    async def _set_state(self, user_id: int, ids: Optional[list], field: str, ntype: Optional[str] = None) -> int:
        if ids is not None:
            require_ids(ids, "ids")
        if ntype is not None and (not isinstance(ntype, str) or not ntype or len(ntype) > 64):
            raise ValidationError("'type' must be a string of 1-64 characters")
        now = utcnow()

        return await self.dbx.write(store.set_state, user_id, ids, field, ntype, now)

    async def clear(self, user_id: int, ids: Optional[list] = None, ntype: Optional[str] = None) -> int:
        """Clear (hide) all or the given notifications of ``user_id``, of type ``ntype`` only when given.

        Returns how many. Raises ValidationError for bad ``ids`` or ``ntype``.
        """
        return await self._set_state(user_id, ids, "cleared_at", ntype)

    async def mark_read(self, user_id: int, ids: Optional[list] = None) -> int:
        """Mark all or the given notifications of ``user_id`` read; returns how many."""
        return await self._set_state(user_id, ids, "read_at")

    # Retention ---------------------------------------------------------------------------

    async def prune(self, older_than: Optional[datetime.datetime] = None) -> int:
        """Delete notifications older than the retention period; resumes from before them resync."""
        cutoff = older_than or (utcnow() - datetime.timedelta(days=self.retention_days))

        deleted = await self.dbx.write(store.prune_before, cutoff)
        if deleted:
            log.info("pruned %d notifications older than %s", deleted, iso(cutoff))
        return deleted

    async def latest_id(self, user_id: int) -> int:
        """The newest notification id visible to ``user_id`` (0 when none)."""
        return await self.dbx.read(store.latest_id, user_id)
