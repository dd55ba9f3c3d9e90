"""The service-API clients: ``SquallClient`` (blocking) and ``AsyncSquallClient`` (asyncio).

Both send the service token (``Authorization: Bearer``; never give it to a browser) and name
users by the product's own ids. A 2xx answer becomes the route's result (``calls.py``);
anything else raises the ``ApiError`` subclass of its status, with the server's ``code``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import calls
from .calls import UNSET, Call
from .errors import SquallConnectionError, error_from_response
from .stream import Subscription, TokenSource, Transport, subscribe
from .types import (ChatPage, ChatResult, Deleted, MemberRemoved, MembersAdded, Posted, PublishResult, Revoked,
                    Upserted)

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0  # seconds for one request, connect to last byte


def _request_args(call: Call[Any]) -> dict[str, Any]:
    # Every write is JSON (Squall answers 415 otherwise), a DELETE without a body included.
    args: dict[str, Any] = {"params": call.params}
    if call.method != "GET":
        args["content"] = json.dumps(call.body if call.body is not None else {}).encode()
        args["headers"] = {"Content-Type": "application/json"}
    return args


def _result(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 300:
        raise error_from_response(response.status_code, response.content, response.headers.get("Retry-After"))
    try:
        answer = response.json()
    except ValueError as exc:
        raise SquallConnectionError(f"{call.method} {call.path}: the answer is not JSON") from exc
    return call.result(response.status_code, answer)


def _headers(service_token: str) -> dict[str, str]:
    if not service_token:
        raise ValueError("the service token is required (SERVICE_TOKEN of the server)")
    return {"Authorization": f"Bearer {service_token}", "Accept": "application/json"}


class SquallClient:
    """Blocking client of the service API: ``SquallClient("http://127.0.0.1:8000", "s3cret")``.

    Use it as a context manager, or call ``close()``: it keeps one connection pool.
    """

    def __init__(self, base_url: str, service_token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(service_token), timeout=timeout)

    def __enter__(self) -> SquallClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one ``Call``; raises ``ApiError`` (refused) or ``SquallConnectionError`` (no answer)."""
        try:
            response = self._http.request(call.method, call.path, **_request_args(call))
        except httpx.TransportError as exc:
            raise SquallConnectionError(f"{call.method} {call.path}: {type(exc).__name__}") from exc
        return _result(call, response)

    def publish(self, message: str, *, external_ids: Sequence[str] | None = None,
                user_ids: Sequence[int] | None = None, broadcast: bool = False, type: str | None = None,
                data: dict[str, Any] | None = None, push: bool = False) -> PublishResult:
        """Store and deliver a notification to ``external_ids`` (known users only) and/or ``user_ids``."""
        return self.send(calls.publish(message, external_ids=external_ids, user_ids=user_ids, broadcast=broadcast,
                                       type=type, data=data, push=push))

    def upsert_user(self, external_id: str, *, display_name: Any = UNSET, avatar_url: Any = UNSET,
                    disabled: Any = UNSET) -> Upserted:
        """Create or update a user; ``avatar_url=None`` removes the avatar, fields left out stay."""
        return self.send(calls.upsert_user(external_id, display_name=display_name, avatar_url=avatar_url,
                                           disabled=disabled))

    def delete_user(self, external_id: str) -> Deleted:
        """Erase the user's account and personal data (their messages stay, as "Deleted user")."""
        return self.send(calls.delete_user(external_id))

    def revoke_user(self, external_id: str) -> Revoked:
        """Refuse the user's tokens issued until now and close their streams everywhere."""
        return self.send(calls.revoke_user(external_id))

    def user_chats(self, external_id: str, *, limit: int | None = None, before: int | None = None) -> ChatPage:
        """A page of the user's chats with unread counts."""
        return self.send(calls.user_chats(external_id, limit=limit, before=before))

    def create_chat(self, kind: str, members: Sequence[str], *, title: str | None = None,
                    key: str | None = None) -> ChatResult:
        """A private or group chat between external ids (unknown ones are created), idempotent by ``key``."""
        return self.send(calls.create_chat(kind, members, title=title, key=key))

    def add_members(self, chat_id: int, external_ids: Sequence[str]) -> MembersAdded:
        """Add members to a group chat; those already in stay as they are."""
        return self.send(calls.add_members(chat_id, external_ids))

    def remove_member(self, chat_id: int, external_id: str) -> MemberRemoved:
        """Remove a member of a group chat; they stop receiving it at once."""
        return self.send(calls.remove_member(chat_id, external_id))

    def post_message(self, chat_id: int, content: str, *, sender: str | None = None,
                     message_type: str | None = None, client_id: str | None = None) -> Posted:
        """Post as ``sender`` (a member's external id) or as the system; idempotent by ``client_id``."""
        return self.send(calls.post_message(chat_id, content, sender=sender, message_type=message_type,
                                            client_id=client_id))


class AsyncSquallClient:
    """The same calls as ``SquallClient``, awaited; ``subscribe()`` opens a user's notification stream."""

    def __init__(self, base_url: str, service_token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(service_token), timeout=timeout)

    async def __aenter__(self) -> AsyncSquallClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one ``Call``; raises ``ApiError`` (refused) or ``SquallConnectionError`` (no answer)."""
        try:
            response = await self._http.request(call.method, call.path, **_request_args(call))
        except httpx.TransportError as exc:
            raise SquallConnectionError(f"{call.method} {call.path}: {type(exc).__name__}") from exc
        return _result(call, response)

    async def publish(self, message: str, *, external_ids: Sequence[str] | None = None,
                      user_ids: Sequence[int] | None = None, broadcast: bool = False, type: str | None = None,
                      data: dict[str, Any] | None = None, push: bool = False) -> PublishResult:
        """Store and deliver a notification to ``external_ids`` (known users only) and/or ``user_ids``."""
        return await self.send(calls.publish(message, external_ids=external_ids, user_ids=user_ids,
                                             broadcast=broadcast, type=type, data=data, push=push))

    async def upsert_user(self, external_id: str, *, display_name: Any = UNSET, avatar_url: Any = UNSET,
                          disabled: Any = UNSET) -> Upserted:
        """Create or update a user; ``avatar_url=None`` removes the avatar, fields left out stay."""
        return await self.send(calls.upsert_user(external_id, display_name=display_name, avatar_url=avatar_url,
                                                 disabled=disabled))

    async def delete_user(self, external_id: str) -> Deleted:
        """Erase the user's account and personal data (their messages stay, as "Deleted user")."""
        return await self.send(calls.delete_user(external_id))

    async def revoke_user(self, external_id: str) -> Revoked:
        """Refuse the user's tokens issued until now and close their streams everywhere."""
        return await self.send(calls.revoke_user(external_id))

    async def user_chats(self, external_id: str, *, limit: int | None = None,
                         before: int | None = None) -> ChatPage:
        """A page of the user's chats with unread counts."""
        return await self.send(calls.user_chats(external_id, limit=limit, before=before))

    async def create_chat(self, kind: str, members: Sequence[str], *, title: str | None = None,
                          key: str | None = None) -> ChatResult:
        """A private or group chat between external ids (unknown ones are created), idempotent by ``key``."""
        return await self.send(calls.create_chat(kind, members, title=title, key=key))

    async def add_members(self, chat_id: int, external_ids: Sequence[str]) -> MembersAdded:
        """Add members to a group chat; those already in stay as they are."""
        return await self.send(calls.add_members(chat_id, external_ids))

    async def remove_member(self, chat_id: int, external_id: str) -> MemberRemoved:
        """Remove a member of a group chat; they stop receiving it at once."""
        return await self.send(calls.remove_member(chat_id, external_id))

    async def post_message(self, chat_id: int, content: str, *, sender: str | None = None,
                           message_type: str | None = None, client_id: str | None = None) -> Posted:
        """Post as ``sender`` (a member's external id) or as the system; idempotent by ``client_id``."""
        return await self.send(calls.post_message(chat_id, content, sender=sender, message_type=message_type,
                                                  client_id=client_id))

    def subscribe(self, token: TokenSource, *, last_event_id: int | None = None, transport: Transport = "sse",
                  **options: Any) -> Subscription:
        """A user's notification stream on this server (``stream.subscribe``); the service token is not used."""
        return subscribe(self.base_url, token, last_event_id=last_event_id, transport=transport, **options)
