"""/sse/notifications through a real HTTP client (httpx streaming), parsed per the EventSource rules.

Acceptance point 5: headers, ``retry:``, ``id:`` + one ``data:`` line per event, heartbeat
comments within the configured interval; plus the 401s of point 8 as seen by a real client.
"""
import asyncio
import gc
import json
import weakref

import httpx
import pytest

from tests.conftest import SERVICE_TOKEN
from tests.support.streams import open_chat, send
from tests.support.sockets import open_raw_stream, read_to_eof, wait_for

PING_INTERVAL = 0.2


@pytest.fixture
def config_overrides():
    """A short heartbeat interval, so that several pings come within a test."""
    return {"sse_ping_interval": PING_INTERVAL, "sse_retry_ms": 1500, "sse_retry_max_ms": 1500}  # a range of one value


class EventSourceReader:
    """The EventSource parsing algorithm (WHATWG HTML §9.2.6) over an httpx byte stream."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._bytes = response.aiter_bytes()
        self._buf = b""
        self.retry = None
        self.last_event_id = ""
        self.lines = []  # every raw line, in order, for wire-format asserts
        self.comments = []

    async def _line(self) -> str:
        while True:
            idx = min((i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0), default=-1)
            if idx >= 0 and not (self._buf[idx:idx + 1] == b"\r" and idx + 1 == len(self._buf)):
                line = self._buf[:idx]
                skip = 2 if self._buf[idx:idx + 2] == b"\r\n" else 1
                self._buf = self._buf[idx + skip:]
                text = line.decode("utf-8")
                self.lines.append(text)
                return text
            chunk = await self._bytes.__anext__()  # StopAsyncIteration at the end of the stream
            self._buf += chunk

    async def next_event(self, timeout: float = 15.0) -> dict:
        """The next dispatched event: ``{"type", "data", "last_event_id"}``."""
        return await asyncio.wait_for(self._next_event(), timeout)

    async def _next_event(self) -> dict:
        data, event_type = [], ""
        while True:
            line = await self._line()
            if line == "":
                if not data:
                    event_type = ""
                    continue
                return {"type": event_type or "message", "data": "\n".join(data),
                        "last_event_id": self.last_event_id}
            if line.startswith(":"):
                self.comments.append(line[1:])
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "event":
                event_type = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)

    async def aclose(self) -> None:
        """Close the byte iterator (an async generator must not be left to the garbage collector)."""
        await self._bytes.aclose()

    async def next_comment(self, timeout: float = 15.0) -> str:
        """Read until the next comment line; returns it."""
        async def read():
            seen = len(self.comments)
            while len(self.comments) == seen:
                line = await self._line()
                if line.startswith(":"):
                    self.comments.append(line[1:])
            return self.comments[-1]
        return await asyncio.wait_for(read(), timeout)


async def open_stream(client: httpx.AsyncClient, url: str, **kw):
    """Enter a streaming GET; returns (context manager, response)."""
    cm = client.stream("GET", url, **kw)
    response = await cm.__aenter__()
    return cm, response


@pytest.mark.gen_test(timeout=60)
async def test_sse_headers_retry_id_data_per_eventsource_rules(api, users, http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        cm, response = await open_stream(client, base + "/sse/notifications",
                                         headers={"Authorization": f"Bearer {bob['token']}",
                                                  "Accept": "text/event-stream",
                                                  "Accept-Encoding": "gzip, deflate, br"})
        readers = []
        try:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers  # even though the client offered gzip
            assert "content-length" not in response.headers
            reader = EventSourceReader(response)
            readers.append(reader)
            unread = await reader.next_event()
            assert reader.lines[0] == "retry: 1500" and reader.retry == 1500
            assert unread["type"] == "message" and json.loads(unread["data"])["type"] == "unread"
            assert unread["last_event_id"] == ""  # state events carry no id

            message = await send(api, alice, chat_id, "over a real client")
            while True:
                event = await reader.next_event()
                data = json.loads(event["data"])
                if data["type"] == "new_message":
                    break
            assert data["content_preview"] == "over a real client" and data["chat_id"] == message["chat_id"]
            assert event["type"] == "message"  # default type: EventSource.onmessage sees it
            assert event["last_event_id"] == str(data["id"])
            # the event is exactly one id line and one data line of compact JSON
            start = reader.lines.index(f"id: {data['id']}")
            assert reader.lines[start + 1] == "data: " + event["data"] and reader.lines[start + 2] == ""
            assert "\n" not in event["data"]
        finally:
            for reader in readers:
                await reader.aclose()
            await cm.__aexit__(None, None, None)


@pytest.mark.gen_test(timeout=60)
async def test_sse_heartbeat_comments_within_interval(users, http_port):
    (bob,) = await users("bob")
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        cm, response = await open_stream(client, f"http://127.0.0.1:{http_port}/sse/notifications",
                                         params={"access_token": bob["token"]})
        readers = []
        try:
            assert response.status_code == 200
            reader = EventSourceReader(response)
            readers.append(reader)
            await reader.next_event()  # unread
            # An idle stream gets a ": ping" comment every interval. Each must come within a
            # third of the 15 s default (generous for a loaded machine, impossible without
            # the configured interval).
            for _ in range(5):
                comment = await reader.next_comment(timeout=PING_INTERVAL * 25)
                assert comment == " ping"
            assert reader.lines.count(": ping") == 5
        finally:
            for reader in readers:
                await reader.aclose()
            await cm.__aexit__(None, None, None)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", ["/sse/notifications", "/sse/chat"])
async def test_sse_bad_token_is_401_json_not_a_stream(users, http_port, services, path):
    from tests.support.streams import expired_token
    (bob,) = await users("bob")
    url = f"http://127.0.0.1:{http_port}{path}"
    cases = [
        ({}, "unauthorized"),
        ({"params": {"access_token": "garbage"}}, "invalid_token"),
        ({"headers": {"Authorization": "Bearer not.a.jwt"}}, "invalid_token"),
        ({"params": {"access_token": expired_token(services.config.jwt_secret, bob["id"])}}, "token_expired"),
        ({"params": {"access_token": expired_token("another-secret-" + "y" * 32, bob["id"])}}, "invalid_token"),
    ]
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        for kw, code in cases:
            response = await client.get(url, **kw)
            assert response.status_code == 401, (kw, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.json()["error"]["code"] == code
            assert set(response.json()["error"]) == {"code", "message"}
            assert "retry:" not in response.text and "data:" not in response.text


def complete_events(received: bytes) -> list:
    """The events of an SSE body (chunk framing left in place) that ended with their blank line."""
    return received.decode("utf-8", "replace").split("\n\n")[:-1]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_a_stream_the_server_ends_finishes_its_body_then_closes(api, users, http_port, http_server,
                                                                     services, version):
    """A live stream is the handler's own socket (Tornado's HTTP layer let go of it, as for a
    WebSocket): heartbeats and the end of the body are written by the stream itself, the
    connection closes once the body has ended, and the ended handler is freed at once (no
    reference cycle left for the garbage collector)."""
    (alice,) = await users("alice")
    baseline = http_server.open_connections
    reader, writer = await open_raw_stream(http_port, alice["token"], version)
    await wait_for(lambda: services.registry.count() == 1
                   and all(conn.wire.request.connection is None for conn in services.registry.connections))
    handler = weakref.ref(next(iter(services.registry.connections)).wire)
    await asyncio.sleep(3 * PING_INTERVAL)  # heartbeats, written by the detached stream
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=alice["token"])
    assert status == 200
    received = await read_to_eof(reader)
    assert b"retry: " in received and b'"type":"unread"' in received.replace(b" ", b"")
    assert b'"auth_expired"' in received and b": ping" in received
    if version == "HTTP/1.1":
        assert b"8\r\n: ping\n\n\r\n" in received  # each heartbeat is one chunk
        assert received.endswith(b"\r\n0\r\n\r\n")  # the terminating chunk, then EOF
    await wait_for(lambda: services.registry.count() == 0 and http_server.open_connections == baseline)
    writer.close()
    gc.disable()  # freed by reference counting alone, not by a collection
    try:
        await wait_for(lambda: handler() is None, timeout=5)
    finally:
        gc.enable()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"sse_ping_interval": 60}])
async def test_a_client_that_goes_away_is_noticed_without_a_heartbeat(users, http_port, http_server, services):
    """No heartbeat is due for a minute: the detached stream's own close callback notices the
    client leaving, and another stream is unaffected."""
    alice, bob = await users("alice", "bob")
    baseline = http_server.open_connections
    streams = [await open_raw_stream(http_port, user["token"], "HTTP/1.1") for user in (alice, bob)]
    await wait_for(lambda: services.registry.count() == 2
                   and all(conn.wire.request.connection is None for conn in services.registry.connections))
    streams[1][1].close()
    await wait_for(lambda: services.registry.count() == 1 and http_server.open_connections == baseline + 1)
    assert services.registry.has_user("notify", alice["id"]) and not services.registry.has_user("notify", bob["id"])
    streams[0][1].close()
    await wait_for(lambda: services.registry.count() == 0 and http_server.open_connections == baseline)


BLOB = "x" * 30000


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("config_overrides", [{"sse_ping_interval": 60, "max_pending_bytes": 32 * 1024 * 1024}])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_the_end_of_a_stream_waits_for_what_is_queued(api, users, http_port, services, version):
    """A client far behind when its session is logged out still gets every event written to it,
    then ``auth_expired``, then the end: closing the connection drops nothing queued."""
    (bob,) = await users("bob")
    reader, writer = await open_raw_stream(http_port, bob["token"], version, rcvbuf=4096)
    await wait_for(lambda: services.registry.count() == 1
                   and all(conn.wire.request.connection is None for conn in services.registry.connections))
    conn = next(iter(services.registry.connections)).wire  # the handler
    published = []

    async def publish(message: str) -> None:
        status, body = await api.call("POST", "/api/notifications",
                                      {"user_ids": [bob["id"]], "message": message, "data": {"blob": BLOB}},
                                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
        assert status == 202
        published.extend(body["ids"])

    async def until_queued() -> None:
        # until the kernel's buffers (and the client's read buffer) are full and the server queues
        while not conn._stream.writing():
            assert len(published) < 400, "the server never had to queue"
            await publish(f"big {len(published)}")

    await until_queued()
    for _ in range(3):  # a few more behind those
        await publish("queued")
    # The client's reader may have taken some more meanwhile (its buffer fills in steps): the
    # logout below must find bytes queued on the server.
    await until_queued()
    assert conn._stream.writing()
    status, _ = await api.call("POST", "/api/auth/logout", {}, token=bob["token"])
    assert status == 200
    received = await read_to_eof(reader, timeout=30)
    events = complete_events(received)
    ids = [int(line[4:]) for event in events for line in event.split("\n") if line.startswith("id: ")]
    assert ids == published
    assert '"auth_expired"' in events[-1]
    if version == "HTTP/1.1":
        assert received.endswith(b"\r\n0\r\n\r\n")
    writer.close()
