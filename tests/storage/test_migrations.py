"""Schema versions: a version-1 database, filled with data, is migrated when the server starts.

Version 1 is frozen here as Peewee models (what `models/` looked like then), so this test keeps
building the real old schema however the current models change.
"""
from __future__ import annotations

import datetime
import json
import subprocess
import sys

import argon2
import peewee
import pytest

from models import open_database
from models.schema import SCHEMA_VERSION
from tests.support.procs import ROOT, server_env
from tests.support.scaleout import ThrowawayPostgres

V1_DB = peewee.DatabaseProxy()
PASSWORD = "password123"
# Recent enough that retention (30 days) keeps the notification
T0 = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
      - datetime.timedelta(days=1)).replace(microsecond=0)


class V1Model(peewee.Model):
    """Base of the frozen version-1 models."""

    class Meta:
        database = V1_DB
        legacy_table_names = False


class User(V1Model):
    """user, version 1."""

    username = peewee.CharField(max_length=32, unique=True)
    display_name = peewee.CharField(max_length=64)
    password_hash = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField()


class Chat(V1Model):
    """chat, version 1: no index on last_activity_at."""

    kind = peewee.CharField(max_length=16, default="group")
    title = peewee.CharField(max_length=128, default="")
    private_key = peewee.CharField(max_length=64, null=True, unique=True)
    created_at = peewee.DateTimeField()
    last_message_id = peewee.BigIntegerField(null=True)
    last_activity_at = peewee.DateTimeField()


class ChatMember(V1Model):
    """chat_member, version 1: no unread_count."""

    chat = peewee.ForeignKeyField(Chat, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    last_read_message_id = peewee.BigIntegerField(default=0)
    joined_at = peewee.DateTimeField()

    class Meta:
        indexes = ((("chat", "user"), True), (("user", "chat"), False))


class Message(V1Model):
    """message, version 1."""

    id = peewee.BigAutoField()
    chat = peewee.ForeignKeyField(Chat, on_delete="CASCADE")
    sender = peewee.ForeignKeyField(User, on_delete="CASCADE")
    content = peewee.TextField()
    message_type = peewee.CharField(max_length=32, default="text_message")
    client_id = peewee.CharField(max_length=64, null=True)
    created_at = peewee.DateTimeField()

    class Meta:
        indexes = ((("chat", "id"), False), (("sender", "client_id"), True))


class Notification(V1Model):
    """notification, version 1."""

    id = peewee.BigAutoField()
    recipient = peewee.ForeignKeyField(User, null=True, on_delete="CASCADE")
    type = peewee.CharField(max_length=64)
    payload = peewee.TextField()
    chat_id = peewee.IntegerField(null=True)
    message_id = peewee.BigIntegerField(null=True)
    created_at = peewee.DateTimeField(index=True)
    read_at = peewee.DateTimeField(null=True)
    cleared_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("recipient", "id"), False),)


class NotificationState(V1Model):
    """notification_state, version 1."""

    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    notification = peewee.ForeignKeyField(Notification, on_delete="CASCADE")
    read_at = peewee.DateTimeField(null=True)
    cleared_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("user", "notification"), True),)


class Setting(V1Model):
    """setting, version 1."""

    key = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.TextField()


V1_MODELS = [User, Chat, ChatMember, Message, Notification, NotificationState, Setting]


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request, tmp_path):
    """The URL of an empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/v1.db"
        return
    db = ThrowawayPostgres()
    yield db.url
    db.drop()


def build_v1(url: str) -> dict:
    """Create the version-1 schema at ``url`` and fill it; returns what the test expects back."""
    db = open_database(url)
    V1_DB.initialize(db)
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with db.connection_context():
        db.create_tables(V1_MODELS)
        Setting.create(key="schema_version", value="1")
        alice, bob, carol = [User.create(username=n, display_name=n.title(), password_hash=hasher.hash(PASSWORD),
                                         created_at=T0) for n in ("alice", "bob", "carol")]
        private = Chat.create(kind="private", private_key=f"{alice.id}:{bob.id}", created_at=T0, last_activity_at=T0)
        group = Chat.create(kind="group", title="Team", created_at=T0, last_activity_at=T0)
        for chat, users in ((private, (alice, bob)), (group, (alice, bob, carol))):
            for u in users:
                ChatMember.create(chat=chat, user=u, joined_at=T0)
        sent = []
        for i, (chat, sender) in enumerate([(private, alice), (private, bob), (private, alice),
                                            (group, carol), (private, alice), (group, alice), (group, bob)]):
            sent.append(Message.create(chat=chat, sender=sender, content=f"m{i} é", created_at=T0,
                                       client_id=f"c{i}"))
        for chat in (private, group):
            last = max(m.id for m in sent if m.chat_id == chat.id)
            Chat.update(last_message_id=last).where(Chat.id == chat.id).execute()
        # Bob has read the private chat up to its second message, and nothing of the group.
        ChatMember.update(last_read_message_id=sent[1].id).where(
            (ChatMember.chat == private) & (ChatMember.user == bob)).execute()
        note = Notification.create(recipient=bob, type="announcement", created_at=T0,
                                   payload=json.dumps({"type": "announcement", "message": "kept",
                                                       "timestamp": T0.isoformat() + "Z"}))
        expected = {
            "message_ids": {private.id: [m.id for m in sent if m.chat_id == private.id],
                            group.id: [m.id for m in sent if m.chat_id == group.id]},
            # unread for bob: alice's m2 and m4 after his read position; the group's m3, m5
            "bob_unread": {private.id: 2, group.id: 2},
            "notification_id": note.id,
        }
    db.close()
    return expected


def read_back(url: str):
    """``(schema version, chat_member columns, chat index names)`` straight from the database."""
    db = open_database(url)
    with db.connection_context():
        version = db.execute_sql("SELECT value FROM setting WHERE key = 'schema_version'").fetchone()[0]
        columns = {c.name for c in db.get_columns("chat_member")}
        indexes = {i.name for i in db.get_indexes("chat")}
    db.close()
    return int(version), columns, indexes


@pytest.mark.gen_test(timeout=120)
async def test_server_start_migrates_v1_database_with_data_intact(old_database, server_factory, tmp_path):
    from tests.support.clients import ApiClient
    expected = build_v1(old_database)
    assert read_back(old_database)[0] == 1
    server = server_factory("--database-url", old_database, "--upload-dir", str(tmp_path / "uploads"))
    api = ApiClient(server.url)

    assert SCHEMA_VERSION == 12
    version, columns, indexes = read_back(old_database)
    assert version == 12 and "unread_count" in columns and "chat_last_activity_at" in indexes
    assert "muted_until" in columns  # version 5: nothing is muted after the upgrade
    db = open_database(old_database)
    with db.connection_context():  # version 4: nobody is an admin after the upgrade
        assert db.execute_sql('SELECT COUNT(*) FROM "user" WHERE is_admin').fetchone()[0] == 0
        assert db.execute_sql('SELECT COUNT(*) FROM "chat_member" WHERE muted_until IS NOT NULL').fetchone()[0] == 0
        assert {"user_preference", "push_subscription"} <= set(db.get_tables())
        # version 6: every existing user is a builtin one, enabled, never revoked, no external id
        users = db.execute_sql('SELECT COUNT(*) FROM "user"').fetchone()[0]
        assert users > 0
        assert db.execute_sql('SELECT kind, COUNT(*) FROM "user" GROUP BY kind').fetchall() == [("builtin", users)]
        assert db.execute_sql('SELECT COUNT(*) FROM "user" WHERE disabled OR external_id IS NOT NULL'
                              ' OR revoked_at IS NOT NULL').fetchone()[0] == 0
        assert db.execute_sql('SELECT COUNT(*) FROM "chat" WHERE external_key IS NOT NULL').fetchone()[0] == 0
        # version 9: the webhook outbox and presence tables, empty
        assert {"webhook_event", "webhook_presence"} <= set(db.get_tables())
        assert db.execute_sql('SELECT COUNT(*) FROM "webhook_event"').fetchone()[0] == 0
        # version 10: no message edited, deleted or reacted to; no change rows
        assert db.execute_sql('SELECT COUNT(*) FROM "message" WHERE edited_at IS NOT NULL'
                              ' OR deleted_at IS NOT NULL OR event IS NOT NULL').fetchone()[0] == 0
        assert db.execute_sql('SELECT COUNT(*) FROM "reaction"').fetchone()[0] == 0
        # version 11: the group's earliest member owns it, everyone else (and private chats) are members;
        # nobody has left yet, no system message, nobody seen yet
        roles = db.execute_sql('SELECT c."kind", u."username", cm."role" FROM "chat_member" cm'
                               ' JOIN "chat" c ON c."id" = cm."chat_id" JOIN "user" u ON u."id" = cm."user_id"'
                               ' ORDER BY cm."id"').fetchall()
        assert roles == [("private", "alice", "member"), ("private", "bob", "member"),
                         ("group", "alice", "owner"), ("group", "bob", "member"), ("group", "carol", "member")]
        assert db.execute_sql('SELECT COUNT(*) FROM "chat_departure"').fetchone()[0] == 0
        assert db.execute_sql('SELECT COUNT(*) FROM "message" WHERE "system" IS NOT NULL').fetchone()[0] == 0
        assert db.execute_sql('SELECT COUNT(*) FROM "user" WHERE "last_seen" IS NOT NULL').fetchone()[0] == 0
        # version 12: the redundant single-column indexes are gone, the composite ones serve
        assert_no_redundant_index(db)
    db.close()

    status, login = await api.call("POST", "/api/auth/login", {"username": "bob", "password": PASSWORD})
    assert status == 200, login
    token = login["access_token"]
    status, chats = await api.call("GET", "/api/chats", token=token)
    assert status == 200
    assert {c["id"]: c["unread_count"] for c in chats["chats"]} == expected["bob_unread"]
    for chat_id, ids in expected["message_ids"].items():
        status, page = await api.call("GET", f"/api/chats/{chat_id}/messages", token=token)
        assert status == 200
        assert [m["id"] for m in page["messages"]] == ids
        assert all(m["content"].endswith(" é") for m in page["messages"])
    status, unread = await api.call("GET", "/api/unread", token=token)
    assert status == 200 and unread["total"] == 4
    # version 5: preferences and mutes work on the migrated rows (no member row was lost)
    status, prefs = await api.call("PATCH", "/api/me/preferences", {"sound": False}, token=token)
    assert status == 200 and prefs["sound"] is False
    some_chat = min(expected["message_ids"])
    status, _ = await api.call("PUT", f"/api/chats/{some_chat}/mute", {"until": None}, token=token)
    assert status == 200
    status, unread = await api.call("GET", "/api/unread", token=token)
    assert unread["total"] == 4 - expected["bob_unread"][some_chat] and unread["muted"]
    await api.call("DELETE", f"/api/chats/{some_chat}/mute", token=token)
    status, notes = await api.call("GET", "/api/notifications", token=token)
    assert status == 200
    assert [(n["id"], n["message"]) for n in notes["notifications"]] == [(expected["notification_id"], "kept")]

    # The migrated schema keeps working: a new message counts as unread for bob.
    alice = (await api.call("POST", "/api/auth/login", {"username": "alice", "password": PASSWORD}))[1]
    private_id = min(expected["message_ids"])
    status, _ = await api.call("POST", f"/api/chats/{private_id}/messages", {"content": "after"},
                               token=alice["access_token"])
    assert status == 201
    status, chats = await api.call("GET", "/api/chats", token=token)
    assert {c["id"]: c["unread_count"] for c in chats["chats"]}[private_id] == 3
    # version 7: the messages stored before the upgrade are found, and so is the new one
    group_id = max(expected["message_ids"])
    status, found = await api.call("GET", "/api/search?q=m3", token=token)
    assert status == 200 and [r["id"] for r in found["results"]] == [expected["message_ids"][group_id][0]]
    status, found = await api.call("GET", "/api/search?q=after", token=token)
    assert status == 200 and [r["chat_id"] for r in found["results"]] == [private_id]
    # version 8: the upload table; a file is uploaded and attached to a message in a migrated chat
    status, up = await api.call("POST", "/api/uploads?filename=n.txt", raw=b"notes", token=token,
                                headers={"Content-Type": "application/octet-stream"})
    assert status == 201, up
    status, sent = await api.call("POST", f"/api/chats/{private_id}/messages",
                                  {"content": "", "attachments": [up["id"]]}, token=token)
    assert status == 201 and sent["message"]["attachments"][0]["id"] == up["id"]


def assert_no_redundant_index(db) -> None:
    """No index of the write-heavy tables is a leading part of another of the same table."""
    from models.migrations import REDUNDANT_V12
    for table in {"notification", "notification_state", "message"}:
        indexes = [(i.name, list(i.columns)) for i in db.get_indexes(table)]
        for name, columns in indexes:
            assert not any(other != name and more[:len(columns)] == columns and len(more) > len(columns)
                           for other, more in indexes), (table, name, indexes)
    for table, name in REDUNDANT_V12:
        assert name not in {i.name for i in db.get_indexes(table)}


def test_a_new_database_has_no_redundant_index(old_database):
    from models.schema import migrate
    db = open_database(old_database)
    with db.connection_context():
        from models.base import database_proxy
        database_proxy.initialize(db)
        migrate(db)
        assert_no_redundant_index(db)
        names = {i.name for i in db.get_indexes("notification")} | {i.name for i in db.get_indexes("message")}
        assert {"notification_recipient_id_id", "message_chat_id_id", "message_sender_id_client_id"} <= names
    db.close()


def test_migrate_command_upgrades_and_is_idempotent(old_database, tmp_path):
    build_v1(old_database)
    for _ in range(2):
        done = subprocess.run([sys.executable, "run.py", "migrate", "--database-url", old_database],
                              cwd=ROOT, env=server_env(LOG_LEVEL="info"), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"schema is at version {SCHEMA_VERSION}" in done.stderr
        assert read_back(old_database)[0] == SCHEMA_VERSION


def test_newer_database_is_refused(old_database):
    build_v1(old_database)
    db = open_database(old_database)
    with db.connection_context():
        db.execute_sql("UPDATE setting SET value = '99' WHERE key = 'schema_version'")
    db.close()
    done = subprocess.run([sys.executable, "run.py", "migrate", "--database-url", old_database],
                          cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "newer than this Squall" in done.stderr


def build_v2(url: str, extra_usernames=()) -> dict:
    """A real version-2 database: version 1 filled by ``build_v1`` (plus ``extra_usernames``),
    brought to version 2 by the released migration."""
    from models.migrations import to_v2
    expected = build_v1(url)
    db = open_database(url)
    V1_DB.initialize(db)
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with db.connection_context():
        for name in extra_usernames:
            User.create(username=name, display_name=name, password_hash=hasher.hash(PASSWORD), created_at=T0)
        with db.atomic():
            to_v2(db)
            Setting.update(value="2").where(Setting.key == "schema_version").execute()
    db.close()
    return expected


@pytest.mark.gen_test(timeout=120)
async def test_v2_database_migrates_to_sessions_schema(old_database, server_factory):
    from tests.support.clients import ApiClient
    build_v2(old_database)
    assert read_back(old_database)[0] == 2
    server = server_factory("--database-url", old_database)
    api = ApiClient(server.url)
    assert read_back(old_database)[0] == SCHEMA_VERSION
    db = open_database(old_database)
    with db.connection_context():
        user_columns = {c.name for c in db.get_columns("user")}
        assert {"username_key", "token_version", "is_admin"} <= user_columns
        assert db.table_exists("refresh_token")
        keys = dict(db.execute_sql('SELECT "username", "username_key" FROM "user"').fetchall())
    db.close()
    assert keys == {"alice": "alice", "bob": "bob", "carol": "carol"}
    # login is case-insensitive, even in fullwidth forms; names differing only in case cannot be added
    for spelling in ("bob", "BOB", "\uff22\uff2f\uff22"):
        status, login = await api.call("POST", "/api/auth/login", {"username": spelling, "password": PASSWORD})
        assert status == 200 and login["user"]["username"] == "bob", (spelling, login)
    status, err = await api.call("POST", "/api/auth/register", {"username": "Alice", "password": PASSWORD})
    assert status == 409 and err["error"]["code"] == "username_taken"
    status, chats = await api.call("GET", "/api/chats", token=login["access_token"])
    assert status == 200 and len(chats["chats"]) == 2
    status, pair = await api.call("POST", "/api/auth/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 200 and pair["user"]["username"] == "bob"


def test_v2_database_with_colliding_usernames_is_refused(old_database):
    build_v2(old_database, extra_usernames=("Alice", "\uff21\uff2c\uff29\uff23\uff25", "Bob"))
    done = subprocess.run([sys.executable, "run.py", "migrate", "--database-url", old_database],
                          cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "differ only in case or Unicode form" in done.stderr
    assert "'Alice'" in done.stderr and "python run.py username-collisions" in done.stderr
    assert "Traceback" not in done.stderr
    assert read_back(old_database)[0] == 2  # nothing changed
    listed = subprocess.run([sys.executable, "run.py", "username-collisions", "--database-url", old_database],
                            cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 1
    lines = sorted(listed.stdout.split("\n"))
    assert any("alice" in line and "Alice" in line and "\uff21\uff2c\uff29\uff23\uff25" in line for line in lines)
    assert any("bob" in line and "Bob" in line for line in lines)
    assert "2 colliding group(s)" in listed.stderr
