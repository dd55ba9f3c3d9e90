"""On PostgreSQL, write transactions of different processes commit in id order.

A resume asks for "events after id N": if a higher id became visible while a lower one was
still uncommitted, a client could receive the higher one live, resume after it, and never
see the lower one. Two DatabaseExecutors (two processes' worth of pools and writer threads)
write to one database; while the first holds an open transaction with a row in it, the
second's row must not become visible.
"""
import asyncio
import threading
import uuid

import pytest

from models import Notification, User, init_db
from models.schema import migrate
from tests.support import pg
from tests.support.scaleout import postgres_base_url
from tornado_app.services.storage.db import DatabaseExecutor


@pytest.fixture
def pg_url():
    url = pg.create_database(postgres_base_url(), "squall_order_" + uuid.uuid4().hex[:10])
    yield url
    pg.drop_database(url)


def visible_ids(url):
    import psycopg2
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT id FROM "notification" ORDER BY id')
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_later_transaction_waits_for_an_earlier_one(pg_url):
    db = init_db(pg_url)
    migrate(db)
    with db.connection_context():
        user = User.create(username="u1", display_name="U", password_hash="x")
    first, second = DatabaseExecutor(db), DatabaseExecutor(db)
    inserted, release = threading.Event(), threading.Event()

    def slow_insert():
        nid = Notification.insert(recipient=user.id, type="t", payload="{}").execute()
        inserted.set()
        release.wait(30)  # hold the transaction open, as a slow commit would
        return nid

    def quick_insert():
        return Notification.insert(recipient=user.id, type="t", payload="{}").execute()

    try:
        slow = asyncio.ensure_future(first.write(slow_insert))
        while not inserted.is_set():
            await asyncio.sleep(0.01)
        quick = asyncio.ensure_future(second.write(quick_insert))
        # Give the second transaction ample time to commit if nothing held it back.
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert visible_ids(pg_url) == [], "a row became visible before the lower id committed"
        release.set()
        low, high = await slow, await quick
        assert low < high
        assert visible_ids(pg_url) == [low, high]
    finally:
        release.set()
        first.close()
        second.close()
