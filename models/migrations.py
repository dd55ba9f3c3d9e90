"""Forward migrations, one function per schema version (Peewee's migrator plus plain SQL).

A migration is frozen once released: it names tables and columns as they were at that
version and never imports the current models, which keep changing.

Versions:
    1  the first schema.
    2  chat_member.unread_count (backfilled from the read positions), so chat lists and the
       ``unread`` frame read one column instead of counting messages; an index on
       chat.last_activity_at, which orders the chat list.
    3  user.is_admin (the admin console; nobody is an admin until granted).
"""
from __future__ import annotations

import peewee
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate


def migrator_for(db: peewee.Database):
    """The playhouse migrator for ``db`` (SQLite or PostgreSQL)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        return PostgresqlMigrator(db)
    return SqliteMigrator(db)


def _index_names(db: peewee.Database, table: str) -> set:
    return {index.name for index in db.get_indexes(table)}


def to_v2(db: peewee.Database) -> None:
    """Version 1 → 2: add and backfill chat_member.unread_count; index chat.last_activity_at."""
    migrator = migrator_for(db)
    columns = {c.name for c in db.get_columns("chat_member")}
    operations = []
    if "unread_count" not in columns:
        operations.append(migrator.add_column("chat_member", "unread_count", peewee.IntegerField(default=0)))
    if "chat_last_activity_at" not in _index_names(db, "chat"):
        operations.append(migrator.add_index("chat", ("last_activity_at",), False))
    migrate(*operations)
    # Messages from others after the member's read position are unread.
    db.execute_sql(
        'UPDATE "chat_member" SET "unread_count" = ('
        ' SELECT COUNT(*) FROM "message" m WHERE m."chat_id" = "chat_member"."chat_id"'
        ' AND m."id" > "chat_member"."last_read_message_id"'
        ' AND m."sender_id" <> "chat_member"."user_id")')


def to_v3(db: peewee.Database) -> None:
    """Version 2 → 3: user.is_admin, false for everyone.

    Plain ALTER TABLE: on SQLite the playhouse migrator adds a NOT NULL column by rebuilding
    the table, and dropping the old ``user`` table would cascade to every row that refers to it.
    """
    if "is_admin" not in {c.name for c in db.get_columns("user")}:
        false = "false" if isinstance(db, peewee.PostgresqlDatabase) else "0"
        db.execute_sql(f'ALTER TABLE "user" ADD COLUMN "is_admin" BOOLEAN NOT NULL DEFAULT {false}')


# version -> function migrating from version - 1; append, never edit a released one
MIGRATIONS = {
    2: to_v2,
    3: to_v3,
}
