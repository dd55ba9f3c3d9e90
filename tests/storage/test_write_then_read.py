"""``DatabaseExecutor.write_then_read``: the write committed in its transaction, then the read on the
same (writer) thread outside it, in one trip; no reader thread is used."""
from __future__ import annotations

import threading

import pytest

from models import User


@pytest.mark.gen_test(timeout=30)
async def test_write_then_read_reads_the_committed_write_on_the_writer_thread(api, users, services):
    (alice,) = await users("alice")
    dbx = services.dbx
    seen = {}

    def write():
        seen["write"] = (threading.current_thread().name, dbx.db.in_transaction())
        User.update(display_name="Renamed").where(User.id == alice["id"]).execute()

    def read():
        seen["read"] = (threading.current_thread().name, dbx.db.in_transaction())
        return User.get_by_id(alice["id"]).display_name

    readers_before = len(dbx._readers._threads)
    assert await dbx.write_then_read(write, read) == "Renamed"
    assert seen["write"][0].startswith("squall-db-write") and seen["write"][1] is True
    assert seen["read"][0] == seen["write"][0] and seen["read"][1] is False  # after the commit
    assert len(dbx._readers._threads) == readers_before  # no reader thread started for it

    def failing():
        User.update(display_name="Never").where(User.id == alice["id"]).execute()
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await dbx.write_then_read(failing, read)
    assert await dbx.read(lambda: User.get_by_id(alice["id"]).display_name) == "Renamed"
