"""``storage.sql.snapshot``: the statements of one read see one view of the database, on
SQLite and on PostgreSQL (where each statement otherwise takes its own), and the notification
replay reads its personal rows and its broadcasts in it."""
import threading

import pytest

from models import Notification, User, utcnow
from tornado_app.services.storage.sql import snapshot


def commit_elsewhere(user_id: int) -> None:
    """One notification committed on a connection of another thread (peewee's are per thread)."""
    def insert():
        db = Notification._meta.database
        with db.connection_context():
            Notification.create(recipient=user_id, type="t", payload="{}", created_at=utcnow())
    t = threading.Thread(target=insert)
    t.start()
    t.join(10)
    assert not t.is_alive()


@pytest.mark.gen_test(timeout=30)
async def test_a_commit_between_two_reads_of_a_snapshot_is_not_seen_until_it_ends(users, services):
    alice, = await users("alice")
    db = Notification._meta.database
    with db.connection_context():
        User.get_by_id(alice["id"])  # a connection of this thread
        with snapshot(Notification):
            before = Notification.select().count()
            commit_elsewhere(alice["id"])
            assert Notification.select().count() == before  # the second read keeps the first one's view
        assert Notification.select().count() == before + 1  # outside: the commit shows
        commit_elsewhere(alice["id"])
        assert Notification.select().count() == before + 2  # without a snapshot, each read sees the latest
