"""Exceptions: every refusal of the server is an ``ApiError`` carrying its JSON ``code``.

Squall answers every error as ``{"error": {"code", "message"}}`` with an HTTP status
(docs/protocol.md, section 1, "Errors"). ``ApiError`` keeps the three; the subclass is
picked by status so that callers can catch a family (``NotFoundError``) or test ``code``.
"""
from __future__ import annotations

import json
from typing import Any


class SquallError(Exception):
    """The base of every exception this package raises."""


class SquallConnectionError(SquallError):
    """The server could not be reached, or the connection broke before an answer."""


class ApiError(SquallError):
    """The server refused a request: ``status`` (HTTP), ``code`` (stable) and ``message`` (for people).

    ``retry_after`` is the server's ``Retry-After`` in seconds (429 and 503), else None.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ValidationError(ApiError):
    """400: a bad field, id or body (``validation_error``, ``invalid_display_name``, …)."""


class AuthenticationError(ApiError):
    """401: a user token refused (``invalid_token``, ``token_expired``, ``token_revoked``, …)."""


class PermissionDeniedError(ApiError):
    """403: ``invalid_service_token``, ``publish_disabled``, ``not_a_member``, …"""


class NotFoundError(ApiError):
    """404: ``user_not_found``, ``chat_not_found``, ``not_found``."""


class ConflictError(ApiError):
    """409: ``chat_key_conflict``, ``client_id_conflict``, ``not_a_group``."""


class RateLimitedError(ApiError):
    """429: ``rate_limited``, ``too_many_connections``, …; ``retry_after`` says when to try again."""


class UnavailableError(ApiError):
    """503: the server is busy, stopping, or its database is down; retry after ``retry_after``."""


class WebhookVerificationError(SquallError):
    """A webhook request whose signature, timestamp or body does not verify: answer it 400."""


STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_from_response(status: int, body: bytes, retry_after: str | None) -> ApiError:
    """The exception for an error answer; a body that is not Squall's error shape gets ``http_<status>``."""
    code, message = f"http_{status}", body[:200].decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message", ""))
    seconds: float | None
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None
    return STATUS_ERRORS.get(status, ApiError)(status, code, message, seconds)
