"""Each service-API route once: the request it sends and how its answer becomes a result.

The sync and asyncio clients both send these ``Call`` objects, so a route's path, body and
result are written in one place (docs/protocol.md, sections 6 and 10).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from .types import (ChatPage, ChatResult, Deleted, MemberRemoved, MembersAdded, Posted, PublishResult, Revoked,
                    Upserted)

T = TypeVar("T")


class _Unset:
    """The marker of a field left out (``None`` is a value: ``avatar_url=None`` removes the avatar)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: method, path, JSON body or query, and ``result(status, json)`` for a 2xx answer."""

    method: str
    path: str
    result: Callable[[int, Any], T]
    body: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def user_path(external_id: str) -> str:
    """``/api/service/users/<id>`` with the id percent-encoded (``org/42`` → ``org%2F42``)."""
    if not isinstance(external_id, str) or not external_id:
        raise ValueError("an external id is a non-empty string")
    return "/api/service/users/" + quote(external_id, safe="")


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


def _as_is(status: int, answer: Any) -> Any:
    return answer


def publish(message: str, *, external_ids: Sequence[str] | None = None, user_ids: Sequence[int] | None = None,
            broadcast: bool = False, type: str | None = None, data: dict[str, Any] | None = None,
            push: bool = False) -> Call[PublishResult]:
    """``POST /api/notifications`` to external ids and/or user ids, or to everyone (``broadcast``)."""
    body: dict[str, Any] = {"message": message}
    if external_ids is not None:
        body["external_ids"] = list(external_ids)
    if user_ids is not None:
        body["user_ids"] = list(user_ids)
    if broadcast:
        body["broadcast"] = True
    if type is not None:
        body["type"] = type
    if data is not None:
        body["data"] = data
    if push:
        body["push"] = True
    return Call("POST", "/api/notifications", _as_is, body)


def upsert_user(external_id: str, *, display_name: Any = UNSET, avatar_url: Any = UNSET,
                disabled: Any = UNSET) -> Call[Upserted]:
    """``PUT /api/service/users/{external_id}``: only the fields given change."""
    body = _given(display_name=display_name, avatar_url=avatar_url, disabled=disabled)
    return Call("PUT", user_path(external_id), lambda status, answer: Upserted(answer["user"], status == 201), body)


def delete_user(external_id: str) -> Call[Deleted]:
    """``DELETE /api/service/users/{external_id}``."""
    return Call("DELETE", user_path(external_id), _as_is)


def revoke_user(external_id: str) -> Call[Revoked]:
    """``POST /api/service/users/{external_id}/revoke``."""
    return Call("POST", user_path(external_id) + "/revoke", _as_is, {})


def user_chats(external_id: str, *, limit: int | None = None, before: int | None = None) -> Call[ChatPage]:
    """``GET /api/service/users/{external_id}/chats?limit=&before=``."""
    params = {name: value for name, value in (("limit", limit), ("before", before)) if value is not None}
    return Call("GET", user_path(external_id) + "/chats", _as_is, None, params)


def create_chat(kind: str, members: Sequence[str], *, title: str | None = None,
                key: str | None = None) -> Call[ChatResult]:
    """``POST /api/service/chats``: idempotent by ``key`` (the same key, kind and members: the same chat)."""
    body: dict[str, Any] = {"kind": kind, "members": list(members)}
    if title is not None:
        body["title"] = title
    if key is not None:
        body["key"] = key
    return Call("POST", "/api/service/chats", lambda status, answer: ChatResult(answer["chat"], status == 201), body)


def add_members(chat_id: int, external_ids: Sequence[str]) -> Call[MembersAdded]:
    """``POST /api/service/chats/{id}/members``."""
    return Call("POST", f"/api/service/chats/{int(chat_id)}/members", _as_is, {"external_ids": list(external_ids)})


def remove_member(chat_id: int, external_id: str) -> Call[MemberRemoved]:
    """``DELETE /api/service/chats/{id}/members/{external_id}``."""
    return Call("DELETE", f"/api/service/chats/{int(chat_id)}/members/" + quote(external_id, safe=""), _as_is)


def post_message(chat_id: int, content: str, *, sender: str | None = None, message_type: str | None = None,
                 client_id: str | None = None) -> Call[Posted]:
    """``POST /api/service/chats/{id}/messages``: as ``sender`` (an external id), or as the system."""
    body: dict[str, Any] = {"content": content}
    if sender is not None:
        body["sender"] = sender
    if message_type is not None:
        body["message_type"] = message_type
    if client_id is not None:
        body["client_id"] = client_id
    return Call("POST", f"/api/service/chats/{int(chat_id)}/messages",
                lambda status, answer: Posted(answer["message"], status == 201), body)
