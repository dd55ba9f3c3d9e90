"""The user directory (``GET /api/users``): who may find whom, and how fast.

A prefix search answers up to 100 names per query, so a one-letter prefix after another
lists every account. ``--user-search`` picks the policy: ``prefix`` (the default) needs at
least ``MIN_PREFIX`` characters, ``exact`` finds a whole username only (people share
their username to be found), ``off`` refuses every search. Every mode is limited per
user (``--user-searches-per-minute``), which is what slows a walk of the directory.
"""
from __future__ import annotations

import unicodedata
from typing import List, Optional

import peewee

from models import User, username_key
from models.user import BUILTIN, EXTERNAL
from ...errors import Forbidden, RateLimited, ValidationError
from ..storage.db import DatabaseExecutor
from ..operations.ratelimit import RateLimiter
from .users import UserService

MODES = ("prefix", "exact", "off")
MIN_PREFIX = 2  # characters of a prefix query
MAX_QUERY = 64  # characters of any query


class UserDirectory:
    """Searches users by the configured mode; one token bucket per searching user."""

    def __init__(self, dbx: DatabaseExecutor, users: UserService, mode: str = "prefix", per_minute: int = 30):
        if mode not in MODES:
            raise ValueError(f"user search mode must be one of {', '.join(MODES)}")
        self.dbx = dbx
        self.users = users
        self.mode = mode
        self._limiter = RateLimiter(per_minute / 60.0, per_minute)

    async def search(self, user_id: int, query: Optional[str], limit: int = 20) -> List[dict]:
        """The users matching ``query`` for ``user_id`` (never ``user_id`` itself), by username.

        Raises Forbidden ``user_search_disabled`` (mode off), ValidationError ``query_too_short``
        / ``invalid_query``, RateLimited (per user; invalid queries are not counted).
        """
        if self.mode == "off":
            raise Forbidden("Searching for users is turned off on this server", "user_search_disabled")
        query = unicodedata.normalize("NFKC", (query or "").strip())
        if len(query) > MAX_QUERY:
            raise ValidationError(f"'q' must be at most {MAX_QUERY} characters", "invalid_query")
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in query):
            raise ValidationError("'q' must not contain control characters", "invalid_query")
        if self.mode == "exact" and not query:
            raise ValidationError("'q' must be a whole username", "query_too_short")
        if self.mode == "prefix" and len(query) < MIN_PREFIX:
            raise ValidationError(f"'q' must be at least {MIN_PREFIX} characters", "query_too_short")
        if not self._limiter.allow(user_id):
            raise RateLimited("Too many user searches; try again later",
                              retry_after=self._limiter.retry_after(user_id))
        rows = await self.dbx.read(_find_exact if self.mode == "exact" else _find_prefix, query, limit, user_id)
        return [self.users.remember(row) for row in rows]


# People to chat with: never the system sender of the service API, never an erased account.
FINDABLE = (BUILTIN, EXTERNAL)


def _find_prefix(query: str, limit: int, exclude: int) -> List[User]:
    """Users whose username or display name starts with ``query`` (any case). Database thread."""
    lowered = query.lower()
    return list(User.select()
                .where((peewee.fn.LOWER(User.username).startswith(lowered)
                        | peewee.fn.LOWER(User.display_name).startswith(lowered)) & (User.id != exclude)
                       & User.kind.in_(FINDABLE))
                .order_by(User.username).limit(limit))


def _find_exact(query: str, limit: int, exclude: int) -> List[User]:
    """The user whose username is ``query``, matched as logins are (case and width folded). Database thread."""
    return list(User.select().where((User.username_key == username_key(query)) & (User.id != exclude)
                                    & User.kind.in_(FINDABLE))
                .limit(limit))
