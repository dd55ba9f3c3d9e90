"""Connection caps: --max-connections (503 server_busy), --max-connections-per-user (429
too_many_connections), --max-handshakes-per-second (503 server_busy), random SSE retry."""
import asyncio
import base64
import json
import os

import pytest

from tests.support.clients import SSEClient


async def handshake(port, path, token):
    """A raw WebSocket upgrade (``/ws/*``) or stream request (``/sse/*``): (status, headers, body, conn)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path}?access_token={token} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if path.startswith("/ws/"):
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]
    else:
        lines += ["Accept: text/event-stream"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *rest = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in rest if ":" in ln)}
    status = int(status_line.split()[1])
    body = None
    if status not in (101, 200):
        body = json.loads(await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10))
    return status, headers, body, writer


def assert_refused(result, status, code):
    got, headers, body, writer = result
    writer.close()
    assert got == status, (got, body)
    assert body["error"]["code"] == code
    assert 1 <= int(headers["retry-after"]) <= 5
    assert body["error"]["retry_after"] == int(headers["retry-after"])


async def wait_for(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_connections": 8}])
async def test_at_the_connection_cap_new_streams_get_503_and_held_ones_keep_delivering(
        api, users, ws_connect, http_port, http_server, services):
    alice, = await users("alice")
    held_ws = [await ws_connect("/ws/notifications", alice["token"]) for _ in range(4)]
    held_sse = [await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
                for _ in range(4)]
    for sse in held_sse:
        assert (await sse.next_json())["type"] == "unread"
    for ws in held_ws:
        assert (await ws.recv())["type"] == "unread"
    await wait_for(lambda: http_server.open_connections == 8)
    assert_refused(await handshake(http_port, "/ws/notifications", alice["token"]), 503, "server_busy")
    assert_refused(await handshake(http_port, "/sse/notifications", alice["token"]), 503, "server_busy")
    status, body = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 503 and body["error"]["code"] == "server_busy"
    status, body = await api.call("GET", "/healthz")  # still answered past the cap
    assert status == 200 and body == {"status": "ok"}
    # the held streams still deliver
    ids = await services.notifications.publish({"user_ids": [alice["id"]], "message": "to the held ones"})
    for ws in held_ws:
        assert (await ws.recv_type("announcement"))["id"] == ids[0]
    for sse in held_sse:
        assert (await sse.next_type("announcement"))["id"] == ids[0]
    # after some close, new ones open
    held_ws.pop().close()
    held_sse.pop().close()
    await wait_for(lambda: http_server.open_connections == 6)
    ws = await ws_connect("/ws/notifications", alice["token"])
    assert (await ws.recv())["type"] == "unread"
    await wait_for(lambda: http_server.open_connections == 7)
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    assert sse.status == 200
    sse.close()
    for sse in held_sse:
        sse.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_connections": 10}])
async def test_past_the_cap_connections_waiting_for_headers_are_shed_first(api, users, ws_connect, http_port,
                                                                          http_server):
    alice, = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    assert (await ws.recv())["type"] == "unread"
    # nine sockets that never finish their request headers fill the cap
    slow = []
    for _ in range(9):
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        slow.append((reader, writer))
    await wait_for(lambda: http_server.open_connections == 10)
    # a new request is still served: the oldest slow socket is closed to make room
    status, body = await api.call("GET", "/healthz")
    assert status == 200
    assert await asyncio.wait_for(slow[0][0].read(), 5) == b""  # shed
    # the WebSocket (not waiting for headers) was not shed
    await ws.send({"type": "ping"})
    assert (await ws.recv()) == {"type": "pong"}
    for _, writer in slow:
        writer.close()


@pytest.mark.gen_test(timeout=60)
async def test_the_33rd_stream_of_one_user_gets_429_and_another_user_is_unaffected(
        api, users, ws_connect, http_port, config):
    assert config.max_connections_per_user == 32
    alice, bob = await users("alice", "bob")
    opened = []
    for n in range(32):
        path = "/ws/notifications" if n % 2 else "/sse/notifications"
        status, headers, body, writer = await handshake(http_port, path, alice["token"])
        assert status in (101, 200), (n, status, body)
        opened.append(writer)
    await asyncio.sleep(0)  # the last stream registers once its open has run
    for path in ("/ws/chat", "/sse/chat", "/ws/notifications", "/sse/notifications"):
        result = await handshake(http_port, path, alice["token"])
        assert_refused(result, 429, "too_many_connections")
    b = await ws_connect("/ws/chat", bob["token"])
    await b.send({"type": "ping"})
    assert (await b.recv_type("pong")) == {"type": "pong"}
    status, headers, body, writer = await handshake(http_port, "/sse/chat", bob["token"])
    assert status == 200
    writer.close()
    # one closes: alice may open one more
    opened.pop().close()
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        status, headers, body, writer = await handshake(http_port, "/ws/chat", alice["token"])
        opened.append(writer)
        if status == 101 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 101
    for writer in opened:
        writer.close()


def test_admitted_handshakes_count_against_the_cap_until_their_stream_registers():
    """Handshakes of one user that arrive together are each admitted against the cap."""
    from tornado_app.errors import RateLimited
    from tornado_app.services.delivery.admission import StreamAdmission
    from tornado_app.services.delivery.registry import ConnectionRegistry
    registry = ConnectionRegistry()
    admission = StreamAdmission(registry, max_per_user=3, handshakes_per_second=0, burst=1)
    for _ in range(3):
        admission.check_user(7)  # three handshakes in flight, none registered yet
    with pytest.raises(RateLimited):
        admission.check_user(7)
    admission.check_user(8)  # another user is unaffected
    class Conn:
        user_id, streams, joined_chats, transport = 7, (), (), "ws_chat"
        sid = token_exp = token_warn_at = None

    conns = [Conn() for _ in range(3)]
    for conn in conns:  # the three open: reservations become registrations
        registry.add(conn)
        admission.opened(7)
    with pytest.raises(RateLimited):
        admission.check_user(7)
    registry.remove(conns[0])
    admission.check_user(7)


def test_concurrent_opens_default_and_limits():
    """``--concurrent-opens``: default 64 opening slots (also the largest batch of unread-state
    reads); 1 and 1000 accepted, 0 and 1001 refused; exactly that many opens hold a slot at once."""
    from tornado_app.config import load_config
    from tornado_app.services.delivery.admission import StreamAdmission
    from tornado_app.services.delivery.registry import ConnectionRegistry
    assert load_config([], environ={})[1].concurrent_opens == 64
    assert load_config([], environ={"CONCURRENT_OPENS": "9"})[1].concurrent_opens == 9
    for ok in (1, 1000):
        assert load_config(["--concurrent-opens", str(ok)], environ={})[1].concurrent_opens == ok
    for bad in ("0", "1001"):
        with pytest.raises(SystemExit):
            load_config(["--concurrent-opens", bad], environ={})
    for slots in (1, 64):
        admission = StreamAdmission(ConnectionRegistry(), max_per_user=32, handshakes_per_second=0, burst=1,
                                    concurrent_opens=slots)
        for _ in range(slots):
            assert not admission.opening_slots.locked()
            asyncio.run(admission.opening_slots.acquire())
        assert admission.opening_slots.locked()  # the next open waits its turn


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_handshakes_per_second": 0.5, "handshake_burst": 3}])
async def test_handshakes_past_the_rate_get_503_with_a_random_retry_after(api, users, http_port):
    alice, = await users("alice")
    for path in ("/ws/notifications", "/sse/notifications", "/ws/chat"):
        status, headers, body, writer = await handshake(http_port, path, alice["token"])
        assert status in (101, 200)
        writer.close()
    waits = set()
    for path in ("/ws/notifications", "/sse/notifications", "/ws/chat", "/sse/chat") * 3:
        result = await handshake(http_port, path, alice["token"])
        waits.add(int(result[1]["retry-after"]))
        assert_refused(result, 503, "server_busy")
    assert len(waits) > 1  # randomised, so refused clients do not return together
    status, me = await api.call("GET", "/api/me", token=alice["token"])  # plain requests are not counted
    assert status == 200


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"sse_retry_ms": 1000, "sse_retry_max_ms": 9000}])
async def test_sse_retry_is_random_per_stream_within_the_range(users, http_port):
    alice, = await users("alice")
    retries = []
    for _ in range(8):
        sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
        await sse.next_json()
        retries.append(sse.retry)
        sse.close()
    assert all(1000 <= r <= 9000 for r in retries), retries
    assert len(set(retries)) > 1, retries
