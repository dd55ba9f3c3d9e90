"""Long-polling where it matters: behind a real buffering nginx (curl and Chromium), across two
processes with the Redis broker, and across a server shutdown.

Acceptance points 3, 4 and 5 of issue 15 (the protocol itself is in test_poll.py).
"""
import json
import re
import subprocess
import threading
import time

import pytest
from playwright.sync_api import expect

from tests.support.browser import (browser, http_json, register, signed_in_context, start_chat_with, stats,  # noqa: F401 (fixtures)
                           wait_live, wait_until)
from tests.support.nginx import BufferingNginx
from tests.support.scaleout import start_cluster



def publish(server, user, message: str) -> int:
    """Publish one notification to ``user`` through ``server``'s service API; its id."""
    status, body = http_json(server, "POST", "/api/notifications", {"user_ids": [user["id"]], "message": message},
                             service=True)
    assert status == 202, (status, body)
    return body["ids"][0]


class Curl:
    """``curl`` in the background: ``stdout`` so far, ``wait()`` → (headers, body), ``elapsed``."""

    def __init__(self, *args: str):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["curl", "-s", "-i", *args], stdout=subprocess.PIPE)
        self.out = b""
        self.ended = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := self.proc.stdout.read1(65536):
            self.out += chunk
        self.ended = time.monotonic()

    def wait(self, timeout: float = 30.0):
        """Wait for curl to end; ``(head, body)`` of its answer."""
        self.proc.wait(timeout)
        self._reader.join(5)
        head, _, body = self.out.partition(b"\r\n\r\n")
        return head.decode("latin-1"), body

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._reader.join(5)


def pending_connections(server) -> int:
    """Streams and pending polls the server holds right now."""
    return stats(server)["connections"]["total"]


@pytest.fixture
def server(server_factory, database_url):
    return server_factory("--database-url", database_url)


@pytest.fixture
def nginx(server, tmp_path):
    proxy = BufferingNginx(server.port, str(tmp_path / "nginx"))
    yield proxy
    proxy.close()


# 3: behind a real nginx that buffers ---------------------------------------------------------

def test_nginx_holds_the_event_stream_back_and_long_polling_gets_through(server, nginx):
    bob = register(server, "bob")
    token = bob["token"]
    direct = Curl("-N", f"{server.url}/sse/notifications?access_token={token}")
    proxied = Curl("-N", f"{nginx.url}/sse/notifications?access_token={token}")
    try:
        wait_until(lambda: pending_connections(server) == 2, what="both streams subscribed")
        nid = publish(server, bob, "through a buffering proxy")
        wait_until(lambda: f'"id":{nid}'.encode() in direct.out, what="the direct stream to deliver")
        # The proxied stream is open on the server, and the event is out of it; the proxy shows
        # nothing at all (no headers, no retry line, no unread state) even seconds later.
        time.sleep(3)
        assert proxied.out == b"", proxied.out[:300]
    finally:
        direct.stop()
        proxied.stop()

    # A long-poll through the same proxy: waiting, then answered within 1 s of the publish.
    first = Curl(f"{nginx.url}/poll/notifications?access_token={token}&timeout=0")
    head, body = first.wait()
    assert head.startswith("HTTP/1.1 200") and re.search(r"(?im)^content-length: \d+", head), head
    answer = json.loads(body)
    assert [e["type"] for e in answer["events"]] == ["unread"] and answer["last_event_id"] == str(nid)
    poll = Curl(f"{nginx.url}/poll/notifications?access_token={token}&last_event_id={answer['last_event_id']}"
                f"&unread_tag={answer['unread_tag']}&timeout=30")
    try:
        wait_until(lambda: pending_connections(server) == 1, what="the poll to wait on the server")
        published = time.monotonic()
        nid2 = publish(server, bob, "long-polled through the proxy")
        head, body = poll.wait()
        answer = json.loads(body)
        assert [e["id"] for e in answer["events"]] == [nid2] and answer["last_event_id"] == str(nid2)
        assert poll.ended - published < 1.0, f"delivered {poll.ended - published:.2f} s after the publish"
        assert re.search(r"(?im)^cache-control: no-store", head) and not re.search(r"(?im)^content-encoding", head)
    finally:
        poll.stop()


@pytest.mark.slow
def test_two_windows_behind_a_buffering_nginx_on_long_polling(browser, server, nginx):
    """Toast, red dot, test page, click to open, chat both ways: everything over long-polling."""
    label = "Long-polling"
    alice, bob = register(server, "alice"), register(server, "bob")
    ctx_a = signed_in_context(browser, nginx, alice)
    ctx_b = signed_in_context(browser, nginx, bob)
    try:
        b_home = ctx_b.new_page()
        b_home.goto(nginx.url + "/")
        wait_live(b_home, label)
        expect(b_home.locator(".top-nav .badge-dot")).to_be_hidden()

        a = ctx_a.new_page()
        a.goto(nginx.url + "/chat")
        wait_live(a, label)
        chat_id = start_chat_with(a, bob)
        expect(a.locator("#conversation")).to_have_attribute("data-transport", "poll")
        a.fill("#composer-input", "Hi Bob, through the proxy?")
        a.press("#composer-input", "Enter")
        expect(a.locator(".msg.mine .bubble")).to_have_text("Hi Bob, through the proxy?")

        toast = b_home.locator(".toast")
        expect(toast).to_have_count(1)
        expect(toast).to_contain_text("Hi Bob, through the proxy?")
        expect(b_home.locator(".top-nav .badge-dot")).to_be_visible()

        b_test = ctx_b.new_page()  # a follower tab: the leader tab polls for it
        b_test.goto(nginx.url + "/test-notifications")
        expect(b_test.locator("#test-notifications .notif[data-type=new_message]")).to_contain_text(
            "Hi Bob, through the proxy?")
        expect(b_test.locator("#conn-transport")).to_have_text(label)
        expect(b_test.locator("#diagnosis-text")).to_have_text("Event stream held back by a proxy: using long-polling")
        expect(b_test.locator("#conn-poll-rtt")).to_have_text(re.compile(r"^\d+ ms$"))
        expect(b_test.locator("#conn-latency")).to_have_text(re.compile(r"^\d+ ms$"))  # the test event came
        assert b_test.evaluate("document.documentElement.dataset.streamRole") != "leader"
        # one poll per browser: B's two tabs hold one notification poll on the server at most
        assert stats(server)["notification_streams_by_user"].get(str(bob["id"]), 0) <= 1
        b_test.close()

        toast.click()
        expect(b_home).to_have_url(f"{nginx.url}/chat/{chat_id}")
        expect(b_home.locator("#messages .bubble")).to_have_text(["Hi Bob, through the proxy?"])
        expect(b_home.locator(".top-nav .badge-dot")).to_be_hidden()
        expect(b_home.locator("#conversation")).to_have_attribute("data-joined", str(chat_id))
        # both ways, live, in the open conversations
        b_home.fill("#composer-input", "Yes, loud and clear")
        b_home.press("#composer-input", "Enter")
        expect(a.locator("#messages .bubble")).to_have_text(["Hi Bob, through the proxy?", "Yes, loud and clear"])
        a.fill("#composer-input", "Great, polling works")
        a.press("#composer-input", "Enter")
        expect(b_home.locator("#messages .bubble")).to_have_text(
            ["Hi Bob, through the proxy?", "Yes, loud and clear", "Great, polling works"])
        expect(b_home.locator(".toast")).to_have_count(0)  # B is active in the chat: no toast
        status, unread = http_json(server, "GET", "/api/unread", token=bob["token"])
        assert status == 200
    finally:
        ctx_a.close()
        ctx_b.close()


# 4: two processes, Redis broker ----------------------------------------------------------------

def test_poll_on_one_process_answered_by_a_publish_on_the_other(shared_db, server_factory):
    one, two = start_cluster("redis", shared_db, server_factory, count=2, POLL_PRESENCE_GRACE="1")
    alice, bob = register(one, "alice"), register(one, "bob")
    status, first = http_json(one, "GET", "/poll/notifications?timeout=0", token=bob["token"])
    assert status == 200
    poll = Curl(f"{one.url}/poll/notifications?access_token={bob['token']}&last_event_id={first['last_event_id']}"
                f"&unread_tag={first['unread_tag']}&timeout=30")
    try:
        wait_until(lambda: pending_connections(one) == 1, what="the poll to wait on process one")
        nid = publish(two, bob, "from the other process")
        head, body = poll.wait()
        assert [e["id"] for e in json.loads(body)["events"]] == [nid]
    finally:
        poll.stop()

    # presence of a chat poller on process one holds for a message sent through process two
    status, chat = http_json(one, "POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    status, first = http_json(one, "GET", f"/poll/chat?chat_id={chat_id}&timeout=0", token=bob["token"])
    poll = Curl(f"{one.url}/poll/chat?access_token={bob['token']}&chat_id={chat_id}"
                f"&last_event_id={first['last_event_id']}&unread_tag={first['unread_tag']}&timeout=30")
    try:
        wait_until(lambda: pending_connections(one) == 1, what="the chat poll to wait on process one")
        status, sent = http_json(two, "POST", f"/api/chats/{chat_id}/messages", {"content": "are you there?"},
                                 token=alice["token"])
        assert status == 201
        head, body = poll.wait()
        frames = json.loads(body)["events"]
        assert {"type": "message", "message": sent["message"]} in frames
    finally:
        poll.stop()
    status, notes = http_json(two, "GET", "/api/notifications", token=bob["token"])
    assert [n for n in notes["notifications"] if n["type"] == "new_message"] == []
    # once the grace period (1 s here, plus a sweep) is over, process two sees bob inactive
    time.sleep(2.5)
    status, _ = http_json(two, "POST", f"/api/chats/{chat_id}/messages", {"content": "still there?"},
                          token=alice["token"])
    assert status == 201
    status, notes = http_json(two, "GET", "/api/notifications", token=bob["token"])
    assert [n["content_preview"] for n in notes["notifications"] if n["type"] == "new_message"] == ["still there?"]


# 5: shutdown ---------------------------------------------------------------------------------------

def test_a_pending_poll_answers_at_once_on_shutdown(server):
    bob = register(server, "bob")
    status, first = http_json(server, "GET", "/poll/chat?timeout=0", token=bob["token"])
    poll = Curl(f"{server.url}/poll/chat?access_token={bob['token']}&last_event_id={first['last_event_id']}"
                f"&unread_tag={first['unread_tag']}&timeout=50")
    try:
        wait_until(lambda: pending_connections(server) == 1, what="the poll to wait")
        stopping = time.monotonic()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        head, body = poll.wait(timeout=10)
        assert poll.ended - stopping < 5.0, "answered within the drain time"
        assert head.startswith("HTTP/1.1 200") and re.search(r"(?im)^connection: close", head), head
        assert json.loads(body) == {"events": [], "last_event_id": first["last_event_id"],
                                    "unread_tag": first["unread_tag"]}
        stopper.join(30)
        assert server.proc.returncode == 0
    finally:
        poll.stop()
