"""Forward migrations, one function per schema version (Peewee's migrator plus plain SQL).

A migration is frozen once released: it names tables and columns as they were at that
version and never imports the current models, which keep changing.

Versions:
    1  the first schema.
    2  chat_member.unread_count (backfilled from the read positions), so chat lists and the
       ``unread`` frame read one column instead of counting messages; an index on
       chat.last_activity_at, which orders the chat list.
    3  sessions: user.username_key (NFKC + case-fold, unique: ``Alice`` and ``ＡＬＩＣＥ`` are
       ``alice``), user.token_version (in every token; "log out everywhere" bumps it), the
       refresh_token table. Refused, with the colliding names, when two existing usernames
       share a key: list them with ``python run.py username-collisions``.
    4  user.is_admin (the admin console; nobody is an admin until granted).
    5  notification preferences and push: chat_member.muted_until, tables user_preference
       and push_subscription.
    6  users from the product's identity: user.external_id (unique, the ``sub`` of an external
       token), user.kind (builtin | external | system | deleted), user.avatar_url,
       user.disabled, user.revoked_at (tokens issued at or before it are refused);
       chat.external_key (unique, the idempotency key of a chat created by the service API).
    7  message search: on SQLite an FTS5 index ``message_fts`` over message.content (external
       content, kept in step by triggers on insert, update of content and delete); on
       PostgreSQL a stored generated column message.search_vector (``to_tsvector('simple',
       content)``) with a GIN index. Built for the existing messages.
    8  attachments: table ``upload`` (random text id, owner, size, content type, sanitized
       filename, image width/height, thumbnail key, created_at; message and chat once a send
       lists it), indexed for quota sums, history pages and the orphan sweep.
    9  webhooks (issue 23): tables webhook_event (the outbox) and webhook_presence.
    10 message changes (issue 25): message.edited_at, message.deleted_at, message.event (rows
       that are changes of a message, stored in the message table so that they share its ids),
       message.reply_to_id, message.mentions, chat_member.mention_count (0 for everyone), table
       reaction (message, user, emoji; unique).
    11 groups that change and presence (issue 25): chat_member.role (owner | admin | member),
       backfilled: in each group not made by the service API (chat.external_key NULL) the
       earliest member (lowest chat_member id: Squall did not record who created a group)
       becomes the owner; table chat_departure (former members and the last message they
       may read); message.system (the JSON of a system message); user.last_seen.
"""
from __future__ import annotations

import secrets
import unicodedata
from collections import defaultdict

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


def _username_key_v3(username: str) -> str:
    # Frozen copy of models.user.username_key as released with version 3.
    return unicodedata.normalize("NFKC", username).casefold()


def username_collisions(db: peewee.Database) -> list:
    """Groups of ``(id, username)`` whose usernames differ only in case or Unicode form."""
    groups = defaultdict(list)
    for user_id, username in db.execute_sql('SELECT "id", "username" FROM "user" ORDER BY "id"').fetchall():
        groups[_username_key_v3(username)].append((user_id, username))
    return [rows for rows in groups.values() if len(rows) > 1]


class UsernameCollision(RuntimeError):
    """Existing usernames collide once compared case-insensitively: an operator must rename some."""


def to_v3(db: peewee.Database) -> None:
    """Version 2 → 3: user.username_key (unique), user.token_version, table refresh_token."""
    collisions = username_collisions(db)
    if collisions:
        listed = "; ".join(", ".join(f"{name!r} (id {uid})" for uid, name in rows) for rows in collisions[:10])
        raise UsernameCollision(
            f"cannot migrate to schema version 3: {len(collisions)} group(s) of usernames differ only in "
            f"case or Unicode form ({listed}). Rename all but one of each group, then start again; "
            f"'python run.py username-collisions' lists them all.")
    columns = {c.name for c in db.get_columns("user")}
    if "username_key" not in columns:
        db.execute_sql('ALTER TABLE "user" ADD COLUMN "username_key" VARCHAR(64) NOT NULL DEFAULT \'\'')
    if "token_version" not in columns:
        db.execute_sql('ALTER TABLE "user" ADD COLUMN "token_version" INTEGER NOT NULL DEFAULT 0')
    for user_id, username in db.execute_sql('SELECT "id", "username" FROM "user"').fetchall():
        db.execute_sql('UPDATE "user" SET "username_key" = %s, "token_version" = %s WHERE "id" = %s'
                       .replace("%s", db.param), (_username_key_v3(username), secrets.randbelow(2 ** 31 - 1) + 1,
                                                  user_id))
    if "user_username_key" not in _index_names(db, "user"):
        db.execute_sql('CREATE UNIQUE INDEX "user_username_key" ON "user" ("username_key")')

    class UserV3(peewee.Model):
        # only what the foreign key needs of "user"
        class Meta:
            database = db
            table_name = "user"

    class RefreshTokenV3(peewee.Model):
        # refresh_token as released with version 3
        token_hash = peewee.CharField(max_length=64, unique=True)
        user = peewee.ForeignKeyField(UserV3, on_delete="CASCADE")
        family = peewee.CharField(max_length=32, index=True)
        created_at = peewee.DateTimeField()
        last_used_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True, index=True)
        replaced_by = peewee.CharField(max_length=64, null=True)

        class Meta:
            database = db
            table_name = "refresh_token"
            indexes = ((("user", "family"), False),)

    db.create_tables([RefreshTokenV3], safe=True)


def to_v4(db: peewee.Database) -> None:
    """Version 3 → 4: user.is_admin, false for everyone.

    Plain ALTER TABLE: on SQLite the playhouse migrator adds a NOT NULL column by rebuilding
    the table, and dropping the old ``user`` table would cascade to every row that refers to it.
    """
    if "is_admin" not in {c.name for c in db.get_columns("user")}:
        false = "false" if isinstance(db, peewee.PostgresqlDatabase) else "0"
        db.execute_sql(f'ALTER TABLE "user" ADD COLUMN "is_admin" BOOLEAN NOT NULL DEFAULT {false}')


def to_v5(db: peewee.Database) -> None:
    """Version 4 → 5: chat_member.muted_until (nullable), tables user_preference and push_subscription.

    Plain ALTER TABLE for the column (see ``to_v4``); the new tables are frozen here.
    """
    if "muted_until" not in {c.name for c in db.get_columns("chat_member")}:
        kind = "TIMESTAMP" if isinstance(db, peewee.PostgresqlDatabase) else "DATETIME"
        db.execute_sql(f'ALTER TABLE "chat_member" ADD COLUMN "muted_until" {kind} NULL')

    class UserV5(peewee.Model):
        # only what the foreign keys need of "user"
        class Meta:
            database = db
            table_name = "user"

    class UserPreferenceV5(peewee.Model):
        user = peewee.ForeignKeyField(UserV5, primary_key=True, on_delete="CASCADE")
        data = peewee.TextField()
        updated_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "user_preference"

    class PushSubscriptionV5(peewee.Model):
        user = peewee.ForeignKeyField(UserV5, on_delete="CASCADE", index=True)
        endpoint = peewee.TextField()
        endpoint_hash = peewee.CharField(max_length=64, unique=True)
        p256dh = peewee.CharField(max_length=128)
        auth = peewee.CharField(max_length=64)
        user_agent = peewee.CharField(max_length=256, default="")
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "push_subscription"

    db.create_tables([UserPreferenceV5, PushSubscriptionV5], safe=True)


def to_v6(db: peewee.Database) -> None:
    """Version 5 → 6: external identities on ``user``, an idempotency key on ``chat``.

    Plain ALTER TABLE (see ``to_v4``); unique indexes allow any number of NULLs on both databases.
    """
    pg = isinstance(db, peewee.PostgresqlDatabase)
    false = "false" if pg else "0"
    user_columns = {c.name for c in db.get_columns("user")}
    added = [
        ("external_id", 'VARCHAR(255) NULL'),
        ("kind", "VARCHAR(16) NOT NULL DEFAULT 'builtin'"),
        ("avatar_url", "VARCHAR(2048) NULL"),
        ("disabled", f"BOOLEAN NOT NULL DEFAULT {false}"),
        ("revoked_at", "BIGINT NULL"),
    ]
    for name, kind in added:
        if name not in user_columns:
            db.execute_sql(f'ALTER TABLE "user" ADD COLUMN "{name}" {kind}')
    if "user_external_id" not in _index_names(db, "user"):
        db.execute_sql('CREATE UNIQUE INDEX "user_external_id" ON "user" ("external_id")')
    if "external_key" not in {c.name for c in db.get_columns("chat")}:
        db.execute_sql('ALTER TABLE "chat" ADD COLUMN "external_key" VARCHAR(255) NULL')
    if "chat_external_key" not in _index_names(db, "chat"):
        db.execute_sql('CREATE UNIQUE INDEX "chat_external_key" ON "chat" ("external_key")')


def search_objects_v7(db: peewee.Database) -> None:
    """The message search index of version 7 (idempotent); also run on a new database's tables.

    SQLite: FTS5 with ``message`` as its external content, so the text is stored once; the
    three triggers are how every writer keeps it in step (a send, an edit that rewrites the
    content, a delete that erases it). ``unicode61`` folds case, not accents (``remove_diacritics 0``).
    PostgreSQL: the ``simple`` configuration (lower case, no stemming, no stop words, accents
    kept), like SQLite's tokenizer, so the two databases find the same words.
    """
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(
            'ALTER TABLE "message" ADD COLUMN IF NOT EXISTS "search_vector" tsvector '
            "GENERATED ALWAYS AS (to_tsvector('simple', \"content\")) STORED")
        db.execute_sql('CREATE INDEX IF NOT EXISTS "message_search_vector" ON "message" USING GIN ("search_vector")')
        return
    exists = db.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_fts'").fetchone()
    db.execute_sql(
        "CREATE VIRTUAL TABLE IF NOT EXISTS \"message_fts\" USING fts5(\"content\", content='message', "
        "content_rowid='id', tokenize='unicode61 remove_diacritics 0')")
    db.execute_sql(
        'CREATE TRIGGER IF NOT EXISTS "message_fts_insert" AFTER INSERT ON "message" BEGIN '
        'INSERT INTO "message_fts" ("rowid", "content") VALUES (new."id", new."content"); END')
    db.execute_sql(
        'CREATE TRIGGER IF NOT EXISTS "message_fts_delete" AFTER DELETE ON "message" BEGIN '
        'INSERT INTO "message_fts" ("message_fts", "rowid", "content") VALUES (\'delete\', old."id", old."content"); END')
    db.execute_sql(
        'CREATE TRIGGER IF NOT EXISTS "message_fts_update" AFTER UPDATE OF "content" ON "message" BEGIN '
        'INSERT INTO "message_fts" ("message_fts", "rowid", "content") VALUES (\'delete\', old."id", old."content"); '
        'INSERT INTO "message_fts" ("rowid", "content") VALUES (new."id", new."content"); END')
    if not exists:
        db.execute_sql('INSERT INTO "message_fts" ("message_fts") VALUES (\'rebuild\')')


def to_v7(db: peewee.Database) -> None:
    """Version 6 → 7: the message search index (``search_objects_v7``), built for every stored message."""
    search_objects_v7(db)


def to_v8(db: peewee.Database) -> None:
    """Version 7 → 8: the ``upload`` table (frozen here)."""

    class UserV8(peewee.Model):
        # only what the foreign keys need of "user", "chat" and "message"
        class Meta:
            database = db
            table_name = "user"

    class ChatV8(peewee.Model):
        class Meta:
            database = db
            table_name = "chat"

    class MessageV8(peewee.Model):
        id = peewee.BigAutoField()

        class Meta:
            database = db
            table_name = "message"

    class UploadV8(peewee.Model):
        id = peewee.CharField(max_length=32, primary_key=True)
        owner = peewee.ForeignKeyField(UserV8, on_delete="CASCADE")
        size = peewee.BigIntegerField()
        content_type = peewee.CharField(max_length=64)
        filename = peewee.CharField(max_length=255)
        width = peewee.IntegerField(null=True)
        height = peewee.IntegerField(null=True)
        thumbnail_key = peewee.CharField(max_length=64, null=True)
        created_at = peewee.DateTimeField()
        message = peewee.ForeignKeyField(MessageV8, null=True, on_delete="CASCADE")
        chat = peewee.ForeignKeyField(ChatV8, null=True, on_delete="CASCADE")

        class Meta:
            database = db
            table_name = "upload"
            indexes = ((("owner", "created_at"), False), (("message",), False), (("created_at",), False))

    db.create_tables([UploadV8], safe=True)


def to_v9(db: peewee.Database) -> None:
    """Version 8 → 9: the webhook outbox and the presence the webhooks last told (frozen here)."""

    class WebhookEventV9(peewee.Model):
        id = peewee.BigAutoField()
        event_id = peewee.CharField(max_length=40, unique=True)
        type = peewee.CharField(max_length=32)
        ordering_key = peewee.CharField(max_length=40)
        body = peewee.TextField()
        status = peewee.CharField(max_length=16, default="pending")
        attempts = peewee.IntegerField(default=0)
        next_attempt_at = peewee.DoubleField(default=0.0)
        window_start = peewee.DoubleField(default=0.0)
        lease_until = peewee.DoubleField(default=0.0)
        leased_by = peewee.CharField(max_length=64, default="")
        last_status = peewee.IntegerField(null=True)
        last_error = peewee.CharField(max_length=200, default="")
        created_at = peewee.DateTimeField()
        delivered_at = peewee.DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "webhook_event"
            indexes = ((("status", "next_attempt_at", "id"), False), (("ordering_key", "status", "id"), False))

    class WebhookPresenceV9(peewee.Model):
        user_id = peewee.IntegerField(primary_key=True)
        online = peewee.BooleanField(default=False)
        changed_at = peewee.DoubleField(default=0.0)
        unseen_sent = peewee.BooleanField(default=False)

        class Meta:
            database = db
            table_name = "webhook_presence"

    db.create_tables([WebhookEventV9, WebhookPresenceV9], safe=True)


def to_v10(db: peewee.Database) -> None:
    """Version 9 → 10: edits, deletes and reactions (frozen here)."""
    migrator = migrator_for(db)
    columns = {c.name for c in db.get_columns("message")}
    operations = [migrator.add_column("message", name, field) for name, field in (
        ("edited_at", peewee.DateTimeField(null=True)), ("deleted_at", peewee.DateTimeField(null=True)),
        ("event", peewee.TextField(null=True)), ("reply_to_id", peewee.BigIntegerField(null=True)),
        ("mentions", peewee.TextField(null=True))) if name not in columns]
    if "mention_count" not in {c.name for c in db.get_columns("chat_member")}:
        operations.append(migrator.add_column("chat_member", "mention_count", peewee.IntegerField(default=0)))
    migrate(*operations)

    class UserV10(peewee.Model):
        class Meta:
            database = db
            table_name = "user"

    class MessageV10(peewee.Model):
        id = peewee.BigAutoField()

        class Meta:
            database = db
            table_name = "message"

    class ReactionV10(peewee.Model):
        message = peewee.ForeignKeyField(MessageV10, on_delete="CASCADE")
        user = peewee.ForeignKeyField(UserV10, on_delete="CASCADE")
        emoji = peewee.CharField(max_length=64)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "reaction"
            indexes = ((("message", "emoji", "user"), True),)

    db.create_tables([ReactionV10], safe=True)


def to_v11(db: peewee.Database) -> None:
    """Version 10 → 11: roles, former members, system messages, last seen (idempotent)."""
    migrator = migrator_for(db)
    operations = []
    if "role" not in {c.name for c in db.get_columns("chat_member")}:
        operations.append(migrator.add_column("chat_member", "role",
                                              peewee.CharField(max_length=16, default="member")))
    if "system" not in {c.name for c in db.get_columns("message")}:
        operations.append(migrator.add_column("message", "system", peewee.TextField(null=True)))
    if "last_seen" not in {c.name for c in db.get_columns("user")}:
        operations.append(migrator.add_column("user", "last_seen", peewee.DateTimeField(null=True)))
    migrate(*operations)
    db.execute_sql(
        'UPDATE "chat_member" SET "role" = \'owner\' WHERE "id" IN ('
        ' SELECT MIN(cm."id") FROM "chat_member" cm JOIN "chat" c ON c."id" = cm."chat_id"'
        " WHERE c.\"kind\" = 'group' AND c.\"external_key\" IS NULL GROUP BY cm.\"chat_id\")"
        ' AND NOT EXISTS (SELECT 1 FROM "chat_member" o WHERE o."chat_id" = "chat_member"."chat_id"'
        " AND o.\"role\" = 'owner')")

    class ChatV11(peewee.Model):
        class Meta:
            database = db
            table_name = "chat"

    class UserV11(peewee.Model):
        class Meta:
            database = db
            table_name = "user"

    class ChatDepartureV11(peewee.Model):
        chat = peewee.ForeignKeyField(ChatV11, on_delete="CASCADE")
        user = peewee.ForeignKeyField(UserV11, on_delete="CASCADE")
        last_message_id = peewee.BigIntegerField(default=0)
        left_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "chat_departure"
            indexes = ((("user", "chat"), True),)

    db.create_tables([ChatDepartureV11], safe=True)


# Single-column indexes that a composite index starting with the same column already serves:
# each cost every insert on the busiest tables (a page more to write per commit) for nothing.
REDUNDANT_V12 = (("notification", "notification_recipient_id"), ("notification_state", "notification_state_user_id"),
                 ("message", "message_chat_id"), ("message", "message_sender_id"))


def to_v12(db: peewee.Database) -> None:
    """Version 11 → 12: drop the redundant single-column indexes of the write-heavy tables (idempotent)."""
    for table, index in REDUNDANT_V12:
        if index in _index_names(db, table):
            db.execute_sql(f'DROP INDEX "{index}"')


# Objects the models cannot declare (virtual tables, triggers, generated columns), created
# with a new database's tables; each is the frozen function of the version that added it.
CREATE_EXTRAS = (search_objects_v7,)

# version -> function migrating from version - 1; append, never edit a released one
MIGRATIONS = {
    2: to_v2,
    3: to_v3,
    4: to_v4,
    5: to_v5,
    6: to_v6,
    7: to_v7,
    8: to_v8,
    9: to_v9,
    10: to_v10,
    11: to_v11,
    12: to_v12,
}
