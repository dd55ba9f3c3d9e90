"""Stream admission against hostile requests (issue 20 items 6 and 10): requests without a valid
credential take nothing from the handshake budget and are throttled per client address (429
too_many_failed_auths); cookie-authenticated streams and polls a page element asks for
(Sec-Fetch-Dest other than empty / websocket) are refused 403 fetch_dest_rejected."""
import asyncio
import math

import pytest

from tests.support.clients import SSEClient
from tests.support.stream_requests import stream_request

ROUTES = ("/ws/notifications", "/sse/notifications", "/ws/chat", "/sse/chat")


def bad_credential(n: int, token: str) -> str:
    """No token, a garbage one, a valid token with a broken signature, or a made-up ticket."""
    return ("", "?access_token=not-a-token", f"?access_token={token[:-6]}AAAAAA", "?ticket=made.up.ticket")[n % 4]


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{"max_handshakes_per_second": 1, "handshake_burst": 5}])
async def test_200_token_less_stream_requests_leave_a_valid_users_stream_opening_at_once(
        users, http_port, ws_connect, config):
    assert config.failed_stream_auths_per_address_per_minute == 60  # the documented default
    alice, = await users("alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = []
    for n in range(200):
        path = ROUTES[n % len(ROUTES)] + bad_credential(n // len(ROUTES), alice["token"])
        status, headers, body, writer = await stream_request(http_port, path)
        writer.close()
        answers.append((status, body["error"]["code"], headers.get("retry-after")))
    elapsed = loop.time() - started
    # None took from the handshake budget (5 here): no 503. The address's failures are 401 up to
    # the default of 60 (plus what its bucket refilled meanwhile, one a second), then 429.
    assert {a[0] for a in answers} == {401, 429}, set(answers)
    first_429 = next(i for i, a in enumerate(answers) if a[0] == 429)
    assert all(a[0] == 401 for a in answers[:first_429])
    assert 60 <= first_429 <= 60 + math.ceil(elapsed) + 1, (first_429, elapsed)
    assert answers[first_429][1] == "too_many_failed_auths" and int(answers[first_429][2]) >= 1
    # a valid user of the same address opens at once, on both transports
    ws = await ws_connect("/ws/notifications", alice["token"])
    assert (await ws.recv(timeout=5))["type"] == "unread"
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    assert sse.status == 200 and (await sse.next_json(timeout=5))["type"] == "unread"
    sse.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"trusted_proxies": ("127.0.0.1/32",),
                                               "failed_stream_auths_per_address_per_minute": 5}])
async def test_failed_stream_auths_are_throttled_per_client_address(users, http_port):
    alice, = await users("alice")

    async def attempt(address, path="/sse/notifications?access_token=bad", token=None):
        headers = {"X-Forwarded-For": address}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, headers, body, writer = await stream_request(http_port, path, headers)
        writer.close()
        return status, (body or {}).get("error", {}).get("code"), headers.get("retry-after")

    paths = ["/ws/chat?access_token=bad", "/sse/chat", "/poll/notifications?ticket=x.y.z",
             "/sse/notifications?access_token=bad", "/poll/chat?chat_id=1"]
    for path in paths:  # at the limit: 5 failures, each answered 401
        assert (await attempt("203.0.113.9", path))[0] == 401
    status, code, retry_after = await attempt("203.0.113.9")  # just past it
    assert (status, code) == (429, "too_many_failed_auths")
    assert 1 <= int(retry_after) <= 12  # one failure comes back every 12 s at 5 a minute
    # another address is unaffected
    assert (await attempt("198.51.100.4"))[0] == 401
    # a valid credential from the throttled address still opens its stream
    status, headers, body, writer = await stream_request(
        http_port, "/sse/notifications", {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {alice['token']}"})
    assert status == 200
    writer.close()
    # IPv6 clients are counted by /64
    for n in range(5):
        assert (await attempt(f"2001:db8:0:7::{n + 1}"))[0] == 401
    assert (await attempt("2001:db8:0:7:ffff:ffff:ffff:ffff"))[:2] == (429, "too_many_failed_auths")
    assert (await attempt("2001:db8:0:8::1"))[0] == 401


# What browsers send in Sec-Fetch-Dest for page elements and navigations (Fetch spec "destination").
PAGE_DESTS = ("image", "document", "script", "iframe", "frame", "style", "audio", "video", "track",
              "font", "object", "embed", "worker", "sharedworker", "serviceworker", "manifest", "report",
              "xslt", "audioworklet", "paintworklet")


@pytest.mark.gen_test(timeout=120)
async def test_cookie_streams_and_polls_from_page_elements_get_403(api, users, http_port, services):
    alice, bob = await users("alice", "bob")
    status, body = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = body["chat"]["id"]
    cookie = {"Cookie": f"squall_token={alice['token']}", "Sec-Fetch-Site": "same-origin"}
    routes = ("/poll/chat?timeout=0&chat_id=%d" % chat_id, "/poll/notifications?timeout=0",
              "/sse/chat?chat_id=%d" % chat_id, "/sse/notifications", "/ws/chat", "/ws/notifications")

    async def ask(path, headers):
        status, answer_headers, body, writer = await stream_request(http_port, path, headers)
        writer.close()
        return status, body

    for dest in PAGE_DESTS + ("IMAGE", " image"):
        for path in routes:
            status, body = await ask(path, {**cookie, "Sec-Fetch-Dest": dest})
            assert status == 403, (dest, path, status, body)
            assert body["error"]["code"] == "fetch_dest_rejected"
    assert services.registry.user_count(alice["id"]) == 0  # nothing opened, nothing held
    # fetch / XHR / EventSource ("empty"), a WebSocket ("websocket" on /ws/*), or no header: allowed
    for path in routes:
        expected = 101 if path.startswith("/ws/") else 200
        for headers in ({**cookie, "Sec-Fetch-Dest": "empty"}, cookie):
            status, body = await ask(path, headers)
            assert status == expected, (path, headers, status, body)
        if path.startswith("/ws/"):
            status, body = await ask(path, {**cookie, "Sec-Fetch-Dest": "websocket"})
            assert status == 101
        else:  # "websocket" is only what a WebSocket handshake sends
            status, body = await ask(path, {**cookie, "Sec-Fetch-Dest": "websocket"})
            assert status == 403 and body["error"]["code"] == "fetch_dest_rejected"
    # a bearer token is not sent by page elements: the header does not matter there
    status, body = await ask(routes[0], {"Authorization": f"Bearer {alice['token']}", "Sec-Fetch-Dest": "image"})
    assert status == 200


@pytest.mark.gen_test(timeout=60)
async def test_an_image_poll_of_a_chat_does_not_silence_its_notifications(api, users, http_port, services):
    alice, bob = await users("alice", "bob")
    status, body = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = body["chat"]["id"]
    # what <img src="/poll/chat?chat_id=…"> sends: alice's cookie, Sec-Fetch-Dest: image; it waits
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write((f"GET /poll/chat?chat_id={chat_id}&timeout=20 HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n"
                  f"Cookie: squall_token={alice['token']}\r\nSec-Fetch-Site: same-origin\r\n"
                  f"Sec-Fetch-Dest: image\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 403")
    status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": "hello"}, token=bob["token"])
    assert status == 201
    status, body = await api.call("GET", "/api/notifications", token=alice["token"])
    assert [n["type"] for n in body["notifications"]][:1] == ["new_message"]
    writer.close()
