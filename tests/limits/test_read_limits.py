"""Cheap reads (issue 20, item 11): long-polls and GET /api/unread have a per-user limit and
run on the database's reader threads, still seeing every message committed (or queued) before them.
"""
import asyncio
import logging
import threading

import pytest

from tests.support.streams import open_chat, send, wait_until

BURST = 3


@pytest.fixture
def config_overrides():
    # A burst of 3 and a refill far slower than any test: the 4th read is refused.
    return {"reads_per_user_per_second": 0.01, "reads_burst": BURST}


def assert_rate_limited(api, status, body):
    assert status == 429, (status, body)
    assert set(body) == {"error"} and body["error"]["code"] == "rate_limited", body
    # The client is told how long to wait: the header and the body say the same.
    retry_after = int(api.last_headers["Retry-After"])
    assert 1 <= retry_after <= 100 and body["error"]["retry_after"] == retry_after


@pytest.mark.gen_test(timeout=30)
async def test_unread_reads_at_the_limit_pass_and_one_past_is_429(api, users):
    alice, bob = await users("alice", "bob")
    for _ in range(BURST):
        status, body = await api.call("GET", "/api/unread", token=alice["token"])
        assert status == 200 and body == {"total": 0, "chats": {}}
    status, body = await api.call("GET", "/api/unread", token=alice["token"])
    assert_rate_limited(api, status, body)
    # another user is not affected
    status, body = await api.call("GET", "/api/unread", token=bob["token"])
    assert status == 200 and body["total"] == 0


@pytest.mark.gen_test(timeout=30)
async def test_polls_share_the_limit_and_a_refused_poll_says_how_long_to_wait(api, users):
    alice, bob = await users("alice", "bob")
    status, _ = await api.call("GET", "/api/unread", token=alice["token"])
    assert status == 200
    for path in ("/poll/notifications?timeout=0", "/poll/chat?timeout=0"):
        status, body = await api.call("GET", path, token=alice["token"])
        assert status == 200 and body["events"][0]["type"] == "unread", body
    # past the burst: both poll routes (and /api/unread) answer 429 with Retry-After
    for path in ("/poll/notifications?timeout=0", "/poll/chat?timeout=0", "/api/unread"):
        status, body = await api.call("GET", path, token=alice["token"])
        assert_rate_limited(api, status, body)
    status, body = await api.call("GET", "/poll/chat?timeout=0", token=bob["token"])
    assert status == 200 and body["events"][0]["type"] == "unread"


class StatementThreads(logging.Handler):
    """Which thread ran each SQL statement (Peewee logs every statement it runs at debug level)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen = []

    def emit(self, record):
        sql = record.msg[0] if isinstance(record.msg, tuple) else str(record.msg)
        self.seen.append((record.threadName, sql))

    def threads_of_unread_reads(self):
        # unread_states: SELECT ... "unread_count" ... "muted_until" ... WHERE ... "unread_count" > ...
        return [name for name, sql in self.seen
                if sql.startswith("SELECT") and '"muted_until"' in sql and '"unread_count" >' in sql]

    def __enter__(self):
        self.logger = logging.getLogger("peewee")
        self.level = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.gen_test(timeout=30)
async def test_polls_and_unread_read_on_a_reader_thread_not_the_writer(api, users):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    await send(api, alice, chat_id, "hello")
    with StatementThreads() as statements:
        status, body = await api.call("GET", "/api/unread", token=bob["token"])
        assert status == 200 and body["chats"] == {str(chat_id): 1}
        for path in ("/poll/notifications?timeout=0", "/poll/chat?timeout=0"):
            status, body = await api.call("GET", path, token=bob["token"])
            assert status == 200 and body["events"][0]["chats"] == {str(chat_id): 1}, body
    threads = statements.threads_of_unread_reads()
    assert len(threads) == 3, statements.seen
    assert all(name.startswith("squall-db-read") for name in threads), threads


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.gen_test(timeout=30)
async def test_a_poll_sees_the_messages_committed_before_it(api, users):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    for n in range(1, 6):
        message = await send(api, alice, chat_id, f"m{n}")  # 201: committed
        status, body = await api.call("GET", "/poll/chat?timeout=0", token=bob["token"])
        assert status == 200 and body["events"][0]["chats"] == {str(chat_id): n}, body
        status, body = await api.call("GET", f"/poll/chat?timeout=0&last_event_id={message['id'] - 1}-0",
                                      token=bob["token"])
        assert [e["message"]["id"] for e in body["events"] if e["type"] == "message"] == [message["id"]]


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.gen_test(timeout=30)
async def test_a_poll_waits_for_a_group_commit_queued_before_it(api, users, services):
    """A send queued on the writer before the poll subscribed, while bob had no stream (so the
    commit sends bob no ``unread`` frame): the poll's first state must include it."""
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    gate = threading.Event()
    blocker = asyncio.ensure_future(services.dbx.write_raw(gate.wait, 10))  # holds the writer thread
    try:
        await wait_until(lambda: services.dbx._last_write is not None and not services.dbx._last_write.done(),
                         what="the writer thread held")
        held = services.dbx._last_write
        sent = asyncio.ensure_future(services.chat.send_message(alice["id"], {"chat_id": chat_id,
                                                                             "content": "queued"}))
        await wait_until(lambda: services.dbx._last_write is not held, what="the send queued on the writer")
        polled = asyncio.ensure_future(api.call("GET", "/poll/chat?timeout=0", token=bob["token"]))
        await wait_until(lambda: polled.done() or any(c.user_id == bob["id"] and c.transport.startswith("poll_")
                                                      for c in services.registry.connections),
                         what="bob's poll subscribed")
        # The poll asked for its unread state in the turn it subscribed: before the commit.
        assert not sent.done()
    finally:
        gate.set()
    await blocker
    message = await sent
    status, body = await polled
    assert status == 200 and body["events"][0]["type"] == "unread"
    assert body["events"][0]["chats"] == {str(chat_id): 1}, (body, message)
