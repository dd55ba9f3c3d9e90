"""Log set-up that keeps secrets and content out of every line, at every level.

- Exception messages are withheld (the type and the frames stay): a driver's message can
  quote a value (a password hash, message text), Tornado's can quote a request line with
  its ``access_token``.
- Tornado's messages about malformed requests keep their first argument (the peer) only.
- Peewee logs each statement with its parameters at debug level; that stays off unless
  ``--log-sql`` is given, and then the statement is logged without its parameters.

``--log-format json`` writes one JSON object per line (python-json-logger) with ``time``,
``level``, ``logger``, ``event`` (the message) and the fields a call passes as ``extra``
(route, status, duration_ms, user_id, conn_id, transport, close_code …), scrubbed the same way.
"""
from __future__ import annotations

import logging
import traceback
from typing import List

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose tracebacks name the exception type but never its message."""

    def formatException(self, ei) -> str:
        typ, value, tb = ei
        frames = "".join(traceback.format_tb(tb)) if tb is not None else ""
        chain: List[str] = []
        cause = value.__cause__ or value.__context__ if value is not None else None
        while cause is not None and len(chain) < 5:
            chain.append(type(cause).__name__)
            cause = cause.__cause__ or cause.__context__
        caused = f" (while handling {', '.join(chain)})" if chain else ""
        name = typ.__name__ if typ is not None else "Exception"
        return f"Traceback (most recent call last):\n{frames}{name}: <message withheld>{caused}"


def json_formatter() -> logging.Formatter:
    """The JSON line formatter, with tracebacks scrubbed like the text format's."""
    from pythonjsonlogger.json import JsonFormatter

    class ScrubbingJsonFormatter(JsonFormatter):
        formatException = ScrubbingFormatter.formatException

    return ScrubbingJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "message": "event"},
        datefmt="%Y-%m-%dT%H:%M:%S%z")


class PeerOnlyFilter(logging.Filter):
    """Tornado's "Malformed HTTP message from %s: %s" and the like: keep the peer, drop the detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) > 1:
            record.msg = str(record.msg).split(":", 1)[0] + ": <detail withheld>"
            record.args = record.args[:1]
        return True


class StatementOnlyFilter(logging.Filter):
    """Peewee logs ``(sql, params)``: keep the statement, drop the parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, tuple) and record.msg:
            record.msg, record.args = "SQL: %s", (record.msg[0],)
        elif record.args:
            record.args = ()
        return True


def setup_logging(level: str, log_sql: bool = False, fmt: str = "text") -> None:
    """Timestamped lines (or JSON objects) on stderr, scrubbed as described in the module docstring."""
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if fmt == "json" else ScrubbingFormatter(FORMAT))
    logging.captureWarnings(True)  # Python warnings become log records (JSON lines too)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("tornado.general").addFilter(PeerOnlyFilter())
    peewee_log = logging.getLogger("peewee")
    if log_sql:
        peewee_log.setLevel(logging.DEBUG)
        peewee_log.addFilter(StatementOnlyFilter())
    else:
        peewee_log.setLevel(logging.WARNING)
