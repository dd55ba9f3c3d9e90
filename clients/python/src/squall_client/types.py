"""The shapes of what the server answers (docs/protocol.md, sections 4, 6 and 10), as TypedDicts.

They describe JSON as it arrives: the dicts are the server's, not copies, and a newer server
may add keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict



class User(TypedDict):
    """A user as the service API answers it."""

    id: int
    external_id: str | None
    display_name: str
    avatar_url: str | None
    disabled: bool
    kind: str


class ChatMember(TypedDict):
    """A member in a service-API chat."""

    id: int
    external_id: str | None
    display_name: str


class Chat(TypedDict):
    """A chat as the service API answers it (``key`` is the product's name for it)."""

    id: int
    kind: str
    title: str
    key: str | None
    members: list[ChatMember]
    created_at: str


class Message(TypedDict):
    """A stored chat message."""

    id: int
    chat_id: int
    sender_id: int
    sender_name: str
    content: str
    message_type: str
    client_id: str | None
    created_at: str


class PublishResult(TypedDict):
    """``POST /api/notifications``: the stored ids, and who muted the type (skipped)."""

    ids: list[int]
    skipped: list[int]
    skipped_external_ids: NotRequired[list[str]]


class MembersAdded(TypedDict):
    """``POST /api/service/chats/{id}/members``: the chat and the external ids added now."""

    chat: Chat
    added: list[str]


class MemberRemoved(TypedDict):
    """``DELETE /api/service/chats/{id}/members/{external_id}``: false when it was not a member."""

    chat: Chat
    removed: bool


class Revoked(TypedDict):
    """``POST /api/service/users/{external_id}/revoke``."""

    revoked: bool
    id: int
    revoked_at: int


class Deleted(TypedDict):
    """``DELETE /api/service/users/{external_id}``."""

    deleted: bool
    id: int


class ChatPage(TypedDict):
    """``GET /api/service/users/{external_id}/chats``: ``next_before`` continues the list."""

    chats: list[dict[str, Any]]
    unread_total: int
    next_before: int | None


@dataclass(frozen=True)
class Upserted:
    """``PUT /api/service/users/{external_id}``: the user, and whether this call created it."""

    user: User
    created: bool


@dataclass(frozen=True)
class ChatResult:
    """``POST /api/service/chats``: the chat, and whether this call created it (else the key named it)."""

    chat: Chat
    created: bool


@dataclass(frozen=True)
class Posted:
    """``POST /api/service/chats/{id}/messages``: the message, and whether it was stored now
    (False: this ``client_id`` was posted before and this is that message)."""

    message: Message
    created: bool
