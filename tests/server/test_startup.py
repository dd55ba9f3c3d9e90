"""Start-up (issue 20, item 18): one-line messages instead of tracebacks, the generated JWT secret in the database.

- ``--processes 2`` on SQLite starts, with one warning line naming the trade-off.
- A missing PostgreSQL database (data or broker) exits non-zero with one line naming it and
  ``createdb``; no traceback.
- Without ``JWT_SECRET`` the generated secret lives in the database (``setting.jwt_secret``):
  servers started from different folders on one database accept each other's tokens, and a
  secret that an earlier version kept in ``.squall_jwt_secret`` is imported, so sessions survive.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid

import jwt
import psycopg2
import pytest

from tests.support.clients import ApiClient, WSClient
from tests.support.procs import ROOT, start_server
from tests.support.scaleout import postgres_base_url, redis_broker_url, register
from tests.support import pg

pytestmark = pytest.mark.same_in_both_runs


def run_py(*args, timeout=60, **env) -> subprocess.CompletedProcess:
    """``python run.py *args`` to completion (stdout and stderr captured)."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "LOG_LEVEL": "info", **env})


def test_processes_on_sqlite_warn_in_one_line(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/w.db", "--processes", "2",
                          "--broker-url", redis_broker_url())
    try:
        lines = [line for line in server.log().splitlines() if "on SQLite" in line]
        assert len(lines) == 1, server.log()
        assert "WARNING" in lines[0] and "--processes 2 on SQLite: every process writes the same file" in lines[0]
        assert "use PostgreSQL" in lines[0]
        assert "Traceback" not in server.log()
    finally:
        server.kill()


def test_one_process_on_sqlite_has_no_such_warning(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/one.db", LOG_LEVEL="info")
    try:
        assert "on SQLite" not in server.log()
    finally:
        server.kill()


@pytest.mark.parametrize("command", [[], ["migrate"], ["--processes", "2", "--broker-url", "redis://127.0.0.1:6379/0"]])
def test_a_missing_postgres_database_is_one_line(command):
    name = "squall_missing_" + uuid.uuid4().hex[:10]
    url = pg.with_database(postgres_base_url(), name)
    done = run_py(*command, "--database-url", url, "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f'database "{name}" does not exist' in lines[0]
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_a_missing_postgres_broker_database_is_one_line(tmp_path):
    name = "squall_missing_" + uuid.uuid4().hex[:10]
    broker = pg.with_database(postgres_base_url(), name) + "?prefix=abc"
    done = run_py("--database-url", f"sqlite:///{tmp_path}/x.db", "--broker-url", broker, "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f'"{name}" does not exist' in lines[0] and "createdb" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_postgres_server_is_one_line():
    done = run_py("--database-url", "postgresql://postgres@127.0.0.1:1/squall", "--port", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'cannot connect to PostgreSQL database "squall" on 127.0.0.1:1' in lines[0]
    assert "Traceback" not in done.stderr


def stored_secret_pg(url: str):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM setting WHERE key = 'jwt_secret'")
            row = cur.fetchone()
            return row and row[0]
    finally:
        conn.close()


@pytest.mark.gen_test(timeout=120)
async def test_servers_started_from_two_folders_accept_each_others_tokens(tmp_path, shared_db, server_factory):
    shared_db.reset()
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    one = server_factory("--database-url", shared_db.url, cwd=str(here), JWT_SECRET="")
    two = server_factory("--database-url", shared_db.url, cwd=str(there), JWT_SECRET="")
    alice = await register(ApiClient(one.url), "alice")
    bob = await register(ApiClient(two.url), "bob")
    for server, user in ((two, alice), (one, bob)):
        status, me = await ApiClient(server.url).call("GET", "/api/me", token=user["token"])
        assert status == 200 and me["id"] == user["id"], me
        ws = await WSClient.connect(server.ws_url, "/ws/notifications", user["token"])
        await ws.recv_type("unread")
        ws.close()
    secret = stored_secret_pg(shared_db.url)
    assert secret and len(secret) >= 48
    jwt.decode(alice["token"], secret, algorithms=["HS256"], options={"verify_aud": False, "verify_iss": False})
    assert not os.path.exists(here / ".squall_jwt_secret") and not os.path.exists(there / ".squall_jwt_secret")
    # A restart from a third folder keeps the sessions.
    one.kill()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    three = server_factory("--database-url", shared_db.url, cwd=str(elsewhere), JWT_SECRET="")
    status, _ = await ApiClient(three.url).call("GET", "/api/me", token=alice["token"])
    assert status == 200


@pytest.mark.gen_test(timeout=120)
async def test_an_explicit_secret_wins_and_is_not_stored(tmp_path, server_factory):
    db = tmp_path / "explicit.db"
    server = server_factory("--database-url", f"sqlite:///{db}", JWT_SECRET="explicit-" + "s" * 40)
    alice = await register(ApiClient(server.url), "alice")
    jwt.decode(alice["token"], "explicit-" + "s" * 40, algorithms=["HS256"],
               options={"verify_aud": False, "verify_iss": False})
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM setting WHERE key = 'jwt_secret'").fetchone()[0] == 0


@pytest.mark.gen_test(timeout=120)
async def test_a_secret_file_of_an_earlier_version_is_moved_into_the_database(tmp_path, server_factory):
    folder = tmp_path / "legacy"
    folder.mkdir()
    db = folder / "squall.db"
    legacy = "legacy-secret-" + uuid.uuid4().hex
    (folder / ".squall_jwt_secret").write_text(legacy + "\n")
    # What an earlier version did with that file: sign with its secret (given explicitly here).
    before = server_factory("--database-url", f"sqlite:///{db}", JWT_SECRET=legacy)
    alice = await register(ApiClient(before.url), "alice")
    before.kill()
    after = server_factory("--database-url", f"sqlite:///{db}", JWT_SECRET="", LOG_LEVEL="info")
    status, me = await ApiClient(after.url).call("GET", "/api/me", token=alice["token"])
    assert status == 200 and me["id"] == alice["id"]
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("SELECT value FROM setting WHERE key = 'jwt_secret'").fetchone()[0] == legacy
    assert "moved the generated JWT secret from" in after.log()
    assert legacy not in after.log()


@pytest.mark.gen_test(timeout=120)
async def test_sqlite_keeps_the_generated_secret_in_the_database_too(tmp_path, server_factory):
    db = tmp_path / "fresh.db"
    first = server_factory("--database-url", f"sqlite:///{db}", JWT_SECRET="")
    alice = await register(ApiClient(first.url), "alice")
    first.kill()
    assert not os.path.exists(tmp_path / ".squall_jwt_secret")
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM setting WHERE key = 'jwt_secret'").fetchone()[0] == 1
    again = server_factory("--database-url", f"sqlite:///{db}", JWT_SECRET="")
    status, _ = await ApiClient(again.url).call("GET", "/api/me", token=alice["token"])
    assert status == 200
