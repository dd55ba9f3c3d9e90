"""Storage: the database off the event loop, and the one validator of the numbers clients send.

- ``DatabaseExecutor``: Peewee work on threads (one writer in one transaction at a time,
  N readers), ``read``/``write``/``read_after_writes``, the advisory write lock on PostgreSQL.
- ``sql``: the written-out fast SQL paths every aggregate's store shares (multi-row
  ``INSERT ... RETURNING``, ``UPDATE ... FROM (VALUES ...)``, ``IN`` lists of ids), with the
  SQLite/PostgreSQL differences.
- ``ids``: ``require_id``, ``require_ids``, ``is_id``, ``MAX_ID`` (1 to 2^63-1).

The lowest room: it imports no other capability.
"""
from .db import DatabaseExecutor, is_unavailable
from .ids import MAX_ID, is_id, is_int, require_id, require_ids

__all__ = ["DatabaseExecutor", "is_unavailable", "MAX_ID", "is_id", "is_int", "require_id", "require_ids"]
