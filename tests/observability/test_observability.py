"""JSON logs, the admin flag and its command, the admin API, and /metrics across two workers.

Issue 12, acceptance points 2, 4 and 6 (real server processes).
"""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.support.procs import ROOT, server_env
from tests.support.scaleout import ThrowawayPostgres, redis_broker_url, register
from tests.support.commands import worker_pids
from tests.support.commands import run_admin

METRICS_TOKEN = "test-metrics-token"
LOG_KEYS = {"time", "level", "logger", "event"}


@pytest.fixture
def any_database(tmp_path):
    """A fresh SQLite file, or a throw-away PostgreSQL database on PostgreSQL runs."""
    if os.environ.get("TEST_DATABASE_URL"):
        db = ThrowawayPostgres()
        yield db.url
        db.drop()
    else:
        yield f"sqlite:///{tmp_path}/admin.db"


@pytest.mark.gen_test(timeout=120)
async def test_admin_grant_and_revoke_command_and_admin_api(any_database, server_factory):
    server = server_factory("--database-url", any_database)
    api = ApiClient(server.url)
    root, other = await register(api, "root"), await register(api, "other")
    # Nobody is an admin by default, not even the first user.
    for user in (root, other):
        status, err = await api.call("GET", "/api/admin/summary", token=user["token"])
        assert status == 403 and err["error"]["code"] == "admin_only"
    status, me = await api.call("GET", "/api/me", token=root["token"])
    assert me["is_admin"] is False

    done = run_admin(any_database, "grant", root["username"])
    assert done.returncode == 0, done.stderr
    assert f"{root['username']} is now an admin" in done.stdout
    status, summary = await api.call("GET", "/api/admin/summary", token=root["token"])
    assert status == 200, summary
    assert summary["totals"]["connections"] == 0 and summary["processes"][0]["state"] == "up"
    status, me = await api.call("GET", "/api/me", token=root["token"])
    assert me["is_admin"] is True
    # The announcement form's route publishes through the publish path, to chosen users or everyone.
    sse = await SSEClient.connect("127.0.0.1", server.port, "/sse/notifications", other["token"])
    await sse.next_type("unread")
    status, out = await api.call("POST", "/api/admin/announce",
                                 {"message": "maintenance at noon", "usernames": [other["username"]]},
                                 token=root["token"])
    assert status == 201 and out["recipients"] == 1
    assert (await sse.next_type("announcement"))["message"] == "maintenance at noon"
    status, err = await api.call("POST", "/api/admin/announce", {"message": "x", "usernames": ["nobody-here"]},
                                 token=root["token"])
    assert status == 404 and err["error"]["code"] == "user_not_found"
    status, err = await api.call("POST", "/api/admin/announce", {"message": "x"}, token=other["token"])
    assert status == 403
    sse.close()

    done = run_admin(any_database, "revoke", root["username"])
    assert done.returncode == 0, done.stderr
    status, _ = await api.call("GET", "/api/admin/summary", token=root["token"])
    assert status == 403

    done = run_admin(any_database, "grant", "no-such-user")
    assert done.returncode == 2 and "no user named 'no-such-user'" in done.stderr
    done = run_admin(any_database, "list")
    assert done.returncode == 0 and done.stdout == "", done
    bad = subprocess.run([sys.executable, "run.py", "admin", "promote", "x", "--database-url", any_database],
                         cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "admin grant|revoke USERNAME" in bad.stderr


@pytest.mark.gen_test(timeout=120)
async def test_admin_command_answers_in_the_users_case_and_lists_admins(any_database, server_factory):
    """``admin grant alice`` for ``Alice`` answers ``Alice``; ``admin list`` names the admins as registered."""
    server = server_factory("--database-url", any_database)
    api = ApiClient(server.url)
    tag = os.urandom(3).hex()
    names = [f"Alice_{tag}", f"bob_{tag}", f"Carol_{tag}"]
    for name in names:
        status, _ = await api.call("POST", "/api/auth/register", {"username": name, "password": "password123"})
        assert status == 201
    done = run_admin(any_database, "grant", names[0].lower())
    assert done.returncode == 0 and done.stdout == f"{names[0]} is now an admin\n", done
    done = run_admin(any_database, "grant", names[2].upper())
    assert done.stdout == f"{names[2]} is now an admin\n", done
    done = run_admin(any_database, "list")
    assert done.returncode == 0 and done.stdout.splitlines() == [names[0], names[2]], done
    done = run_admin(any_database, "revoke", names[0].upper())
    assert done.stdout == f"{names[0]} is no longer an admin\n", done
    done = run_admin(any_database, "list")
    assert done.stdout.splitlines() == [names[2]], done
    bad = subprocess.run([sys.executable, "run.py", "admin", "list", "extra", "--database-url", any_database],
                         cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "admin list" in bad.stderr


@pytest.mark.gen_test(timeout=120)
async def test_json_logs_parse_and_connection_close_is_logged(server_factory):
    server = server_factory("--log-format", "json", LOG_LEVEL="info")
    api = ApiClient(server.url)
    alice = await register(api, "alice")
    ws = await WSClient.connect(server.ws_url, "/ws/chat", alice["token"])
    await ws.request({"type": "ping"}, "pong")
    ws.close(1000)
    sse = await SSEClient.connect("127.0.0.1", server.port, "/sse/notifications", alice["token"])
    await sse.next_type("unread")
    sse.close()
    await api.call("GET", "/no/such/route")
    await api.call("GET", "/api/me", token="bad-token")
    await asyncio.sleep(0.5)
    assert server.stop() == 0

    records = []
    for line in server.log().splitlines():
        if line.strip():
            record = json.loads(line)  # every line is one JSON object
            assert LOG_KEYS <= record.keys(), record
            records.append(record)
    closes = [r for r in records if r["logger"] == "squall.connections" and r["event"].startswith("connection closed")]
    ws_close = next(r for r in closes if r["transport"] == "ws_chat")
    assert ws_close["close_code"] == 1000 and ws_close["duration_ms"] >= 0 and ws_close["conn_id"]
    sse_close = next(r for r in closes if r["transport"] == "sse_notifications")
    assert sse_close["duration_ms"] >= 0
    access = [r for r in records if r["logger"] == "tornado.access"]
    assert any(r["route"] == "unmatched" and r["status"] == 404 for r in access)
    assert any(r["route"] == "/api/me" and r["status"] == 401 and "duration_ms" in r for r in access)
    assert not any("bad-token" in json.dumps(r) or alice["token"] in json.dumps(r) for r in records)


def host_totals(text: str) -> dict:
    """``{"connections": n, "processes": n}`` from one scrape."""
    out = {"connections": 0, "processes": 0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "squall_connections":
                out["connections"] += s.value
            elif s.name == "squall_processes":
                out["processes"] = s.value
    return out


async def scrape_until(url: str, want: dict, timeout: float = 30) -> dict:
    """Scrape (a new connection each time, so any worker may answer) until the totals are ``want``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, text = await ApiClient(url).call("GET", "/metrics", headers={
            "Authorization": f"Bearer {METRICS_TOKEN}", "Connection": "close"})
        assert status == 200
        got = host_totals(text)
        if got == want:
            return got
        assert asyncio.get_running_loop().time() < deadline, (got, want)
        await asyncio.sleep(0.2)


async def open_on_both(server, token: str, n: int = 12) -> list:
    """``n`` WebSockets; with SO_REUSEPORT the kernel spreads them over both workers."""
    sockets = []
    for _ in range(n):
        ws = await WSClient.connect(server.ws_url, "/ws/chat", token)
        await ws.request({"type": "ping"}, "pong")
        sockets.append(ws)
    return sockets


@pytest.mark.gen_test(timeout=180)
async def test_two_workers_metrics_add_up_and_drop_a_dead_worker(server_factory):
    db = ThrowawayPostgres()
    try:
        server = server_factory("--processes", "2", "--database-url", db.url, "--broker-url", redis_broker_url(),
                                "--metrics-token", METRICS_TOKEN, LOG_LEVEL="info")
        api = ApiClient(server.url)
        alice = await register(api, "alice")
        sockets = await open_on_both(server, alice["token"])
        await scrape_until(server.url, {"connections": 12, "processes": 2})
        # Which sockets does worker 0 hold? Kill it; its sockets close, the rest stay counted.
        pids = worker_pids(server.log())
        os.kill(pids[0], signal.SIGKILL)
        deadline = asyncio.get_running_loop().time() + 60
        while worker_pids(server.log()).get(0) == pids[0]:
            assert asyncio.get_running_loop().time() < deadline, server.log()
            await asyncio.sleep(0.1)
        survivors = []
        for ws in sockets:
            try:
                await ws.request({"type": "ping"}, "pong")
                survivors.append(ws)
            except Exception:
                pass
        assert 0 < len(survivors) < 12, "the sockets were not spread over both workers"
        await scrape_until(server.url, {"connections": len(survivors), "processes": 2})
        # The restarted worker counts again: new sockets land on both, totals stay exact.
        more = await open_on_both(server, alice["token"], 6)
        await scrape_until(server.url, {"connections": len(survivors) + 6, "processes": 2})
        for ws in survivors + more:
            ws.close()
        await scrape_until(server.url, {"connections": 0, "processes": 2})
        assert re.search(r"worker 0 \(pid \d+\) exited", server.log())
    finally:
        db.drop()
