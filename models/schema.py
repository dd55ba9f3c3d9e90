"""Schema creation and forward migrations, tracked by a version number in ``Setting``."""
from __future__ import annotations

import logging

import peewee

from . import ALL_MODELS, Setting
from .base import is_postgres
from .migrations import CREATE_EXTRAS, MIGRATIONS

log = logging.getLogger("squall.schema")

# The version that the current models describe; models/migrations.py brings older ones here.
SCHEMA_VERSION = max(MIGRATIONS, default=1)
# pg_advisory_lock key: processes starting together migrate one at a time
_LOCK_KEY = 0x5351_4C4C  # "SQLL"


def get_version(db: peewee.Database) -> int:
    """The schema version stored in the database (0 when there is none)."""
    if not db.table_exists(Setting._meta.table_name):
        return 0
    row = Setting.get_or_none(Setting.key == "schema_version")
    return int(row.value) if row else 0


def set_version(version: int) -> None:
    """Record ``version`` as the database's schema version."""
    Setting.insert(key="schema_version", value=str(version)).on_conflict(
        conflict_target=[Setting.key], update={Setting.value: str(version)}).execute()


def migrate(db: peewee.Database) -> int:
    """Create the schema or bring it forward to ``SCHEMA_VERSION``; idempotent. Returns the version.

    On PostgreSQL an advisory lock serialises processes and hosts that start at once;
    SQLite has a single writer anyway. Raises RuntimeError for a database newer than this code.
    """
    with db.connection_context():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                return _migrate(db)
            finally:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        return _migrate(db)


def _migrate(db: peewee.Database) -> int:
    version = get_version(db)
    if version == 0 and not db.table_exists("user"):
        with db.atomic():
            db.create_tables(ALL_MODELS, safe=True)
            for create in CREATE_EXTRAS:
                create(db)
            set_version(SCHEMA_VERSION)
        log.info("created schema version %d", SCHEMA_VERSION)
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema version {version} is newer than this Squall "
                           f"({SCHEMA_VERSION}); upgrade Squall")
    if version == 0:
        raise RuntimeError("the database has Squall tables but no schema version; "
                           "it was not created by Squall")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS[version + 1]
        with db.atomic():
            step(db)
            set_version(version + 1)
        log.info("migrated schema from version %d to %d", version, version + 1)
        version += 1
    db.create_tables(ALL_MODELS, safe=True)
    return version
