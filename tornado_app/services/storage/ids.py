"""One validator for every number a client sends: ids, limits and positions.

URL segments, query arguments, JSON bodies and WebSocket frames all go through these,
before any query: SQLite's INTEGER and PostgreSQL's BIGINT stop at 2**63 - 1, and a
larger Python int raises ``OverflowError`` deep in the driver (a 500) instead of a 400.
"""
from __future__ import annotations

from typing import List, Optional

from ...errors import ValidationError

MAX_ID = 2 ** 63 - 1  # larger integers overflow SQLite's INTEGER and PostgreSQL's BIGINT
MAX_ID_DIGITS = 19


def is_int(value) -> bool:
    """True for a JSON integer (booleans are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_id(value, minimum: int = 1) -> bool:
    """True for a JSON integer in ``minimum..2**63-1``."""
    return is_int(value) and minimum <= value <= MAX_ID


def require_id(value, name: str, minimum: int = 1) -> int:
    """``value`` as an id in ``minimum..2**63-1``. Raises ValidationError."""
    if not is_id(value, minimum):
        raise ValidationError(f"'{name}' must be an integer from {minimum} to {MAX_ID}")
    return value


def require_ids(values, name: str, most: int = 10000) -> List[int]:
    """A JSON list of at most ``most`` ids. Raises ValidationError."""
    if not isinstance(values, list) or len(values) > most or not all(is_id(v) for v in values):
        raise ValidationError(f"'{name}' must be a list of at most {most} ids (1 to {MAX_ID})")
    return values


def parse_int(raw: Optional[str], name: str, minimum: int = 1, maximum: int = MAX_ID,
              code: str = "validation_error") -> int:
    """A decimal integer from text (URL, query, header) within bounds. Raises ValidationError."""
    text = (raw or "").strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_ID_DIGITS + 1:
        raise ValidationError(f"'{name}' must be an integer from {minimum} to {maximum}", code)
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValidationError(f"'{name}' must be an integer from {minimum} to {maximum}", code)
    return value
