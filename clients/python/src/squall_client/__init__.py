"""Squall's Python client: the service API (sync and asyncio), ``mint_token``, ``verify_webhook``, ``subscribe``.

    from squall_client import SquallClient, mint_token, verify_webhook, subscribe

Every refusal of the server raises an ``ApiError`` subclass carrying its ``status``, ``code``
and ``message``. clients/python/README.md walks through each part.
"""
from .calls import UNSET, Call
from .client import AsyncSquallClient, SquallClient
from .errors import (ApiError, AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError,
                     RateLimitedError, SquallConnectionError, SquallError, UnavailableError, ValidationError,
                     WebhookVerificationError)
from .stream import Subscription, subscribe
from .tokens import TokenMinter, mint_token
from .types import (Chat, ChatMember, ChatPage, ChatResult, Deleted, MemberRemoved, MembersAdded, Message, Posted,
                    PublishResult, Revoked, Upserted, User)
from .webhooks import EVENT_TYPES, WebhookEvent, verify_webhook

__version__ = "0.1.0"

__all__ = [
    "UNSET", "Call", "AsyncSquallClient", "SquallClient", "ApiError", "AuthenticationError", "ConflictError",
    "NotFoundError", "PermissionDeniedError", "RateLimitedError", "SquallConnectionError", "SquallError",
    "UnavailableError", "ValidationError", "WebhookVerificationError", "Subscription", "subscribe",
    "TokenMinter", "mint_token", "Chat", "ChatMember", "ChatPage", "ChatResult", "Deleted", "MemberRemoved",
    "MembersAdded", "Message", "Posted", "PublishResult", "Revoked", "Upserted", "User", "EVENT_TYPES",
    "WebhookEvent", "verify_webhook",
]
