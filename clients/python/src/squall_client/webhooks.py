"""``verify_webhook``: check a Squall webhook request (Standard Webhooks) and parse its event.

Squall signs each delivery with ``--webhook-secret`` (``whsec_<base64>``) in the Standard
Webhooks way: headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``). The body is
``{"id", "type", "timestamp", "data"}``. Deliveries are at least once: deduplicate on ``id``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypedDict

import standardwebhooks

from .errors import WebhookVerificationError

# The event types and their ``data`` (docs/integration.md, "Webhooks").
EVENT_TYPES = ("message.created", "chat.read", "user.online", "user.offline", "notification.unseen")


class WebhookUser(TypedDict):
    """A user in webhook data: Squall's id, username and the product's id (None for builtin users)."""

    id: int
    username: str
    external_id: str | None


class WebhookChat(TypedDict):
    """The chat of an event: ``key`` is the product's name for it (None when it has none)."""

    id: int
    key: str | None
    kind: str


class MessageCreatedData(TypedDict):
    """``message.created``: ``members`` are every member of the chat, sender included."""

    chat: WebhookChat
    message: dict[str, Any]
    sender: WebhookUser
    members: list[dict[str, Any]]


class NotificationUnseenData(TypedDict):
    """``notification.unseen``: ``unread`` has ``total`` and ``chats`` [{chat_id, key, count}];
    ``previews`` [{chat_id, message_id, sender, content, created_at}], newest first."""

    user: WebhookUser
    unread: dict[str, Any]
    previews: list[dict[str, Any]]


class HeadersLike(Protocol):
    """A request's headers: a dict, or any mapping with ``items()`` (Flask's, Starlette's, Django's)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class WebhookEvent:
    """A verified event: ``id`` (deduplicate on it), ``type``, ``timestamp`` (aware, UTC) and ``data``."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]


def _parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise WebhookVerificationError("the event's timestamp is not an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise WebhookVerificationError("the event's timestamp is not an ISO-8601 string") from exc
    if parsed.tzinfo is None:
        raise WebhookVerificationError("the event's timestamp has no time zone")
    return parsed


def verify_webhook(headers: HeadersLike, body: bytes | str, secret: str) -> WebhookEvent:
    """Verify ``body`` (the raw request body, exactly as received) against ``headers`` and ``secret``.

    Raises ``WebhookVerificationError`` when a header is missing, the signature does not match
    (a changed body, another secret), the timestamp is more than 5 minutes from now (a replay),
    or the body is not an event object. Answer such a request 400 and do not act on it.
    """
    try:
        hook = standardwebhooks.Webhook(secret)
    except Exception as exc:  # a secret that is not whsec_<base64>: the library raises several kinds
        raise ValueError("the webhook secret must be whsec_<base64> as given to --webhook-secret") from exc
    plain = {str(name).lower(): str(value) for name, value in headers.items()}
    try:
        hook.verify(body, plain, json_parse=False)
    except standardwebhooks.WebhookVerificationError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError("the body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str) or not event_type:
        raise WebhookVerificationError("the event has no id or type")
    if not isinstance(data, dict):
        raise WebhookVerificationError("the event's data is not an object")
    return WebhookEvent(event_id, event_type, _parse_timestamp(event.get("timestamp")), data)
