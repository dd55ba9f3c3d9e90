"""Fixtures: config → services (started on the test's IOLoop) → app → real server on 127.0.0.1.

Set TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test to run the suite on
PostgreSQL: a throw-away database is created for the run and emptied before each test.
Set TEST_EVENT_LOOP=uvloop to run the in-process servers on uvloop instead of asyncio's
loop (child servers started with ``run.py`` use ``--event-loop``, uvloop by default).
"""
from __future__ import annotations

import os
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

if os.environ.get("TEST_EVENT_LOOP", "asyncio") == "uvloop":
    import asyncio
    import uvloop
    # pytest-tornado's io_loop fixture makes each test's loop with the policy's new_event_loop.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from tornado_app.application import close_connections, make_app, said_goodbye  # noqa: E402
from tornado_app.config import Config  # noqa: E402
from tornado_app.services import build_services  # noqa: E402

from tests.support.clients import ApiClient, WSClient  # noqa: E402
from tests.support import pg  # noqa: E402

SERVICE_TOKEN = "test-service-token"

# Markers by folder (pyproject.toml describes them): ``-m browser``, ``-m cluster`` and
# ``-m storage`` select whole folders, ``-m "not slow"`` a quick run.
FOLDER_MARKERS = {
    "browser": ("browser",),
    "cluster": ("cluster",),
    "storage": ("storage",),
    "api": ("storage",),  # the HTTP API: every route reads and writes through the dialect's SQL
    "outbound": ("storage",),  # webhooks: the outbox's claims and scans are SQL of each dialect
}
# Test modules outside tests/storage and tests/api whose outcome depends on the database
# dialect: stream opens and resumes (openstate's and chat's SQL per dialect), group commit,
# per-user counts, paging, hostile text (PostgreSQL refuses NUL in text, SQLite stores it).
# CI's PostgreSQL pass runs ``-m storage``.
STORAGE_MODULES = {
    "test_chat_ws", "test_sse_chat", "test_notifications_streams", "test_open_batching",
    "test_poll", "test_registry_hygiene", "test_message_quota", "test_read_limits",
    "test_amplification", "test_fuzz",
}

# Tests that use this machine's PostgreSQL and Redis whatever TEST_DATABASE_URL says: the
# multi-process ones (``shared_db``) and those marked ``same_in_both_runs`` (the brokers, the
# bench). The SQLite run runs them; the PostgreSQL run (.ci/run's second) would repeat them.
SAME_IN_BOTH_RUNS_FIXTURES = {"shared_db"}
TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    """Mark by folder and module; in a PostgreSQL run, skip what would run as in the SQLite run."""
    for item in items:
        folder = os.path.relpath(str(item.path), TESTS).split(os.sep)[0]
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)
        if item.path.stem in STORAGE_MODULES:
            item.add_marker("storage")
    if not os.environ.get("TEST_DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    skip = pytest.mark.skip(reason="uses this machine's PostgreSQL and Redis whatever TEST_DATABASE_URL says:"
                                   " it runs in the suite's SQLite run")
    for item in items:
        if item.get_closest_marker("same_in_both_runs") or SAME_IN_BOTH_RUNS_FIXTURES & set(item.fixturenames):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_database_url():
    """A throw-away PostgreSQL database for this run (None on SQLite runs)."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield None
        return
    url = pg.create_database(base, "squall_test_" + uuid.uuid4().hex[:10])
    yield url
    pg.drop_database(url)


@pytest.fixture
def database_url(tmp_path, pg_database_url):
    """A fresh database per test: a new SQLite file, or the run's PostgreSQL database emptied."""
    if pg_database_url:
        pg.reset_database(pg_database_url)
        return pg_database_url
    return f"sqlite:///{tmp_path}/squall-test.db"


@pytest.fixture
def config_overrides():
    """Override in a test module (or parametrize) to change Config fields."""
    return {}


@pytest.fixture
def config(database_url, tmp_path, config_overrides):
    """The Config of the in-process test server."""
    values = dict(database_url=database_url, jwt_secret="test-jwt-secret-" + "x" * 32,
                  service_token=SERVICE_TOKEN, password_hash_profile="fast",
                  rate_limit_per_second=10_000, rate_limit_burst=10_000,
                  reads_per_user_per_second=10_000, reads_burst=10_000,
                  # every test registers its users from 127.0.0.1, some of them concurrently
                  registrations_per_address_per_minute=100_000, hash_per_address=64, hash_queue=256,
                  logins_per_address_per_minute=100_000, refreshes_per_address_per_minute=100_000,
                  refreshes_per_session_per_minute=100_000,
                  max_handshakes_per_second=10_000, handshake_burst=10_000,
                  upload_dir=str(tmp_path / "uploads"))
    values.update(config_overrides)
    return Config(**values)


@pytest.fixture
def services(io_loop, config):
    """Started services for one test; stopped (connections closed, writes drained) afterwards."""
    svc = build_services(config)
    io_loop.run_sync(svc.start)
    yield svc

    async def stop():
        await said_goodbye(close_connections(svc), 10)
        await svc.stop()
    io_loop.run_sync(stop, timeout=30)


@pytest.fixture
def app(services):
    """The Tornado application (pytest-tornado's http_server serves it)."""
    return make_app(services)


@pytest.fixture
def http_server(request, io_loop, _unused_port, services, app):
    """The test server: Squall's own HTTP server (timeouts, caps, body limit) on 127.0.0.1."""
    from tornado_app.application import make_http_server
    server = make_http_server(services, app)
    server.add_sockets([_unused_port[0]])

    def stop():
        server.stop()
        io_loop.run_sync(server.close_all_connections, timeout=30)
    request.addfinalizer(stop)
    return server


@pytest.fixture
def api(http_server, http_port):
    """JSON client of the running test server."""
    return ApiClient(f"http://127.0.0.1:{http_port}")


@pytest.fixture
def ws_url(http_server, http_port):
    """ws:// base URL of the running test server."""
    return f"ws://127.0.0.1:{http_port}"


@pytest.fixture
def ws_connect(ws_url):
    """``await ws_connect(path, token, **query)`` → WSClient; all are closed after the test."""
    opened = []

    async def connect(path, token=None, **query):
        client = await WSClient.connect(ws_url, path, token, **query)
        opened.append(client)
        return client
    yield connect
    for client in opened:
        client.close()


@pytest.fixture
def users(api):
    """``await users("alice", "bob")`` → registered users, each with a ``token``."""
    async def make(*names):
        return [await api.register(name + "_" + uuid.uuid4().hex[:6], display_name=name.title())
                for name in names]
    return make


@pytest.fixture
def server_factory(tmp_path):
    """``server_factory(*args, **env)`` starts ``python run.py`` children; all are killed afterwards."""
    from tests.support.procs import start_server
    started = []

    def start(*args, **env):
        proc = start_server(tmp_path, *args, **env)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A local Redis Cluster (6 redis-server: 3 masters, 3 replicas), started once for the run on first use."""
    from tests.support.redis_cluster import LocalRedisCluster
    cluster = LocalRedisCluster(str(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_db():
    """One throw-away PostgreSQL database for a module of multi-process tests, emptied per test."""
    from tests.support.scaleout import ThrowawayPostgres
    db = ThrowawayPostgres()
    yield db
    db.drop()
