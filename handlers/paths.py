"""Request paths no route can serve: refused before routing, with one 400 and one access-log line.

Tornado unquotes a route's path arguments and decodes them as UTF-8; a NUL reached
``os.path.realpath`` in the static handler as a ValueError (a 500 with a traceback per
request). Checking the raw path once, before any handler, keeps every route (and every
handler written later) safe from it.
"""
from __future__ import annotations

import re
from typing import Optional
from urllib.parse import unquote_to_bytes

from tornado_app.errors import ValidationError

from .base import BaseHandler, public

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` (as received, still percent-encoded) is refused, or None when it is fine.

    Refused: a ``%`` not followed by two hex digits, a NUL (raw or ``%00``), and bytes that
    are not UTF-8 once unquoted (``%ff``, overlong forms such as ``%c0%ae``, surrogates).
    """
    if path.isascii() and "%" not in path and "\x00" not in path:
        return None  # the usual path: nothing to decode
    if _BAD_ESCAPE.search(path):
        return "The path has a '%' that is not followed by two hex digits"
    try:
        raw = unquote_to_bytes(path.encode("latin-1"))  # Tornado reads the request line as latin-1
    except UnicodeEncodeError:
        return "The path is not valid UTF-8"
    if b"\x00" in raw:
        return "The path must not contain NUL"
    try:
        raw.decode("utf-8")  # strict: overlong forms and surrogates fail too
    except UnicodeDecodeError:
        return "The path is not valid UTF-8"
    return None


class InvalidPathHandler(BaseHandler):
    """Any request whose path fails ``path_problem``: 400 ``invalid_path`` for every method."""

    def initialize(self, problem: str):
        self.problem = problem

    @public
    def prepare(self):
        raise ValidationError(self.problem, "invalid_path")
