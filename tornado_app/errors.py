"""Domain errors: services raise them, the handlers' base classes turn them into one JSON shape.

HTTP: ``{"error": {"code": "...", "message": "..."}}`` with ``status``.
WebSocket: ``{"type": "error", "code": "...", "message": "...", "client_id": ...}``.
"""
from __future__ import annotations

from typing import Optional


class SquallError(Exception):
    """An error a client caused or may see: a status, a snake_case code and a sentence."""

    status = 400
    code = "bad_request"
    retry_after: Optional[float] = None  # seconds; sent as a Retry-After header (HTTP) or field (WebSocket frames)

    def __init__(self, message: str, code: Optional[str] = None, status: Optional[int] = None,
                 retry_after: Optional[float] = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        if retry_after is not None:
            self.retry_after = max(1, int(round(retry_after)))

    def to_dict(self) -> dict:
        """The JSON error object (without the ``error`` wrapper); ``retry_after`` where set."""
        if self.retry_after is None:
            return {"code": self.code, "message": self.message}
        return {"code": self.code, "message": self.message, "retry_after": self.retry_after}


class ValidationError(SquallError):
    """400: a field is missing, of the wrong type or out of range."""

    status, code = 400, "validation_error"


class BadJSON(SquallError):
    """400: the body or frame is not a JSON object."""

    status, code = 400, "bad_json"


class Unauthorized(SquallError):
    """401: no valid credentials."""

    status, code = 401, "unauthorized"


class Forbidden(SquallError):
    """403: authenticated, but not allowed."""

    status, code = 403, "forbidden"


class NotFound(SquallError):
    """404: no such thing (or not visible to this user)."""

    status, code = 404, "not_found"


class Conflict(SquallError):
    """409: the request conflicts with stored state."""

    status, code = 409, "conflict"


class PayloadTooLarge(SquallError):
    """413: the body is over the size limit."""

    status, code = 413, "payload_too_large"


class RateLimited(SquallError):
    """429: too many requests; try again later."""

    status, code = 429, "rate_limited"


class Unavailable(SquallError):
    """503: the server is shutting down or a dependency is unreachable."""

    status, code = 503, "unavailable"


class ServerBusy(Unavailable):
    """503: over a capacity limit right now (connections, handshakes, hashing); retry later."""

    status, code = 503, "server_busy"


class UnsupportedMediaType(SquallError):
    """415: a JSON route was sent something other than ``Content-Type: application/json``."""

    status, code = 415, "unsupported_media_type"


class DatabaseUnavailable(Unavailable):
    """503: the database cannot be reached, or stayed locked past the busy timeout; retry later."""

    status, code = 503, "database_unavailable"
