"""Message search: ``GET /api/search?q=`` over the messages of the caller's chats.

Each database searches with its own engine, kept in step by the database itself (schema
version 7, models/migrations.py ``search_objects_v7``): SQLite's FTS5 index ``message_fts``
with triggers on every insert, content update and delete of a message; PostgreSQL's stored
generated ``tsvector`` column with a GIN index. So every writer (a send, the service API, an
edit or a delete that erases the content) keeps the index right without calling this module.

The query is never passed through as engine syntax (FTS5 and ``to_tsquery`` both have
operators, and a stray quote is a syntax error): it is cut into words, every word must occur,
the last one as a prefix (search as you type), and the words are put back into the engine's
syntax quoted. Highlighting is done here, on the words, so the client gets plain text
segments to render (no markup from stored content is ever interpreted).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


from ...errors import RateLimited, ValidationError
from ..identity import UserService
from ..operations import RateLimiter
from ..storage import DatabaseExecutor

from . import store
from .history_store import load_extras
from .shape import Extras, render

# A word as both engines cut text: letters and digits (FTS5's unicode61 and PostgreSQL's
# parser both split on "_" and punctuation).
WORD_RE = re.compile(r"[^\W_]+")
MAX_QUERY_CHARS = 200  # longer: 400 query_too_long
MAX_TERMS = 8  # more words: 400 too_many_terms
MIN_PREFIX_CHARS = 2  # a shorter last word must match whole (a one-letter prefix matches almost everything)
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
MAX_OFFSET = 1000  # deepest page start (cursor); past it: 400 invalid_cursor
SNIPPET_CHARS = 200  # longer contents are cut to a window around the first match
SNIPPET_LEAD = 60  # characters kept before the first match in a cut window


def fold(text: str) -> str:
    """A word as both engines compare them: in lower case, accents kept ("cafe" is not "café")."""
    return unicodedata.normalize("NFC", text).lower()


@dataclass(frozen=True)
class SearchQuery:
    """A validated query: folded words, the last one a prefix when ``prefix``."""

    terms: Tuple[str, ...]
    prefix: bool

    @classmethod
    def parse(cls, q: Optional[str]) -> "SearchQuery":
        """The words of ``q``. Raises ValidationError (``invalid_query``, ``query_too_long``, ``too_many_terms``)."""
        if not isinstance(q, str) or not q.strip():
            raise ValidationError("give the words to search for in 'q'", "invalid_query")
        if len(q) > MAX_QUERY_CHARS:
            raise ValidationError(f"'q' is longer than {MAX_QUERY_CHARS} characters", "query_too_long")
        terms = tuple(fold(word) for word in WORD_RE.findall(q))
        if not terms:
            raise ValidationError("'q' has no letters or digits to search for", "invalid_query")
        if len(terms) > MAX_TERMS:
            raise ValidationError(f"'q' has more than {MAX_TERMS} words", "too_many_terms")
        return cls(terms, len(terms[-1]) >= MIN_PREFIX_CHARS)

    def fts5(self) -> str:
        """The FTS5 MATCH expression: each word a quoted phrase (implicit AND), the last one a prefix."""
        phrases = [f'"{term}"' for term in self.terms]  # words hold no quote: WORD_RE
        if self.prefix:
            phrases[-1] += "*"
        return " ".join(phrases)

    def tsquery(self) -> str:
        """The ``to_tsquery('simple', …)`` text: quoted words joined by ``&``, the last one ``:*``."""
        lexemes = [f"'{term}'" for term in self.terms]
        if self.prefix:
            lexemes[-1] += ":*"
        return " & ".join(lexemes)

    def matches(self, word: str) -> bool:
        """Whether ``word`` of a message is one the query found."""
        folded = fold(word)
        if self.prefix and folded.startswith(self.terms[-1]):
            return True
        return folded in self.terms


def highlight(content: str, query: SearchQuery) -> List[Dict[str, object]]:
    """``content`` (or a window of it) as ``[{"text", "match"}]`` segments, the found words marked."""
    spans = [(m.start(), m.end()) for m in WORD_RE.finditer(content) if query.matches(m.group())]
    start, end = 0, len(content)
    if end > SNIPPET_CHARS:
        first = spans[0][0] if spans else 0
        start = max(0, min(first - SNIPPET_LEAD, end - SNIPPET_CHARS))
        end = start + SNIPPET_CHARS
    segments: List[Dict[str, object]] = []

    def add(text: str, match: bool) -> None:
        if not text:
            return
        if segments and segments[-1]["match"] is match:
            segments[-1]["text"] = str(segments[-1]["text"]) + text
        else:
            segments.append({"text": text, "match": match})

    if start > 0:
        add("…", False)
    position = start
    for s, e in spans:
        if e <= start or s >= end:
            continue
        s, e = max(s, start), min(e, end)
        add(content[position:s], False)
        add(content[s:e], True)
        position = e
    add(content[position:end], False)
    if end < len(content):
        add("…", False)
    return segments


class MessageSearch:
    """Ranked, paged, highlighted search over the messages of the chats a user belongs to."""

    def __init__(self, dbx: DatabaseExecutor, users: UserService, per_minute: int = 30):
        self.dbx = dbx
        self.users = users
        # per user, burst as large (--message-searches-per-minute)
        self._limiter = RateLimiter(per_minute / 60.0, per_minute)

    async def search(self, user_id: int, q: Optional[str], chat_id: Optional[int] = None,
                     limit: int = DEFAULT_LIMIT, cursor: Optional[str] = None) -> dict:
        """``{"results": [message + "highlight"], "next_cursor"}``, best match first, newest first among equals.

        Only messages of chats ``user_id`` is a member of are searched (in ``chat_id`` alone
        when given). ``cursor`` is the ``next_cursor`` of the previous page.
        Raises ValidationError (``invalid_query``, ``query_too_long``, ``too_many_terms``,
        ``invalid_cursor``), RateLimited (``rate_limited``).
        """
        query = SearchQuery.parse(q)
        offset = self._offset(cursor)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"'limit' must be between 1 and {MAX_LIMIT}")
        if not self._limiter.allow(user_id):
            raise RateLimited("You are searching too fast; wait before the next search",
                              retry_after=self._limiter.retry_after(user_id))
        rows, extras = await self.dbx.read(self._select, user_id, query, chat_id, limit + 1, offset)
        more = len(rows) > limit
        rows = rows[:limit]
        results = await render(self.users, rows, extras)  # the shape of history
        for m, found in zip(rows, results):
            found["highlight"] = highlight(m.content, query)
        return {"results": results, "next_cursor": str(offset + limit) if more and offset + limit <= MAX_OFFSET
                else None}

    @staticmethod
    def _offset(cursor: Optional[str]) -> int:
        if cursor is None or cursor == "":
            return 0
        if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 6 or int(cursor) > MAX_OFFSET:
            raise ValidationError("'cursor' must be the next_cursor of a previous page", "invalid_cursor")
        return int(cursor)

    def _select(self, user_id: int, query: SearchQuery, chat_id: Optional[int], limit: int,
                offset: int) -> Tuple[list, Extras]:
        # Database thread. Membership is part of the query itself, so a chat the user left
        # is not searched even if a cache elsewhere has not heard of it yet. ``limit`` is one
        # more than the page (to tell whether there is a next one): that row needs no extras.
        rows = store.search_rows(user_id, query.tsquery(), query.fts5(), chat_id, limit, offset)
        return rows, load_extras(rows[:limit - 1])
