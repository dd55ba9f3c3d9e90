"""A client that stops reading is closed at the per-connection limit; a reading one is unaffected.

Acceptance point 9. The slow client is a raw socket with a small receive buffer that reads the
response head and then nothing: the server's unsent bytes for it grow past ``max_pending_bytes``.
"""
import asyncio
import json
import socket
import struct

import pytest

from tests.conftest import SERVICE_TOKEN
from tests.support.streams import wait_until
from tests.support.sockets import open_stalled

LIMIT = 64 * 1024
BLOB = "x" * 30000  # each notification is ~30 KB
MAX_PUBLISHES = 400  # ~12 MB: far more than any loopback socket buffers hold


@pytest.fixture
def config_overrides():
    """A small per-connection limit."""
    return {"max_pending_bytes": LIMIT}


async def read_ws_close_code(reader) -> int:
    """Read server frames (unmasked) until a close frame; its status code."""
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def stalled_conn(services, user_id):
    """The server-side connection of ``user_id`` (it has exactly one)."""
    conns = [c for c in services.registry.connections if c.user_id == user_id]
    assert len(conns) == 1
    return conns[0]


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("path", ["/ws/notifications", "/sse/notifications"])
async def test_slow_consumer_is_closed_while_reader_gets_everything(api, users, ws_connect, services,
                                                                     http_port, path):
    alice, bob = await users("alice", "bob")
    reader_ws = await ws_connect("/ws/notifications", alice["token"])
    await reader_ws.recv_type("unread")
    stalled_reader, stalled_writer = await open_stalled(http_port, path, bob["token"])
    await wait_until(lambda: services.registry.has_user("notify", bob["id"]), what="bob's stream")
    slow = stalled_conn(services, bob["id"])

    published = []
    for i in range(MAX_PUBLISHES):
        status, body = await api.call("POST", "/api/notifications",
                                      {"broadcast": True, "message": f"big {i}", "data": {"blob": BLOB}},
                                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
        assert status == 202
        published.append(body["ids"][0])
        # the reading client gets each one, in order, while the other stalls
        frame = await reader_ws.recv(timeout=15)
        assert frame["id"] == body["ids"][0] and frame["message"] == f"big {i}"
        if slow.overflowed:
            break
    assert slow.overflowed, "the stalled connection was never closed"
    assert len(published) * 30000 > LIMIT  # it took more than the limit (kernel buffers hold some)

    # the reading client keeps receiving after the slow one was dropped
    status, body = await api.call("POST", "/api/notifications", {"user_ids": [alice["id"]], "message": "after"},
                                  headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert (await reader_ws.recv())["id"] == body["ids"][0]

    # the stalled client now reads what had reached it, then learns it was closed
    if path.startswith("/ws/"):
        assert await asyncio.wait_for(read_ws_close_code(stalled_reader), 30) == 4008
    else:
        received = b""
        while True:
            chunk = await asyncio.wait_for(stalled_reader.read(65536), 30)
            if not chunk:
                break  # the stream ended
            received += chunk
        # Only complete events count (an EventSource dispatches an event, and moves its last
        # event id, at the blank line that ends it): the kernel may hold the start of an event
        # whose rest was still in the server's buffer when the connection was dropped.
        complete = received.decode("utf-8", "replace").split("\n\n")[:-1]
        ids = [int(line[4:]) for event in complete for line in event.split("\n") if line.startswith("id: ")]
        assert ids and ids == published[:len(ids)] and len(ids) < len(published)
    await wait_until(lambda: not services.registry.has_user("notify", bob["id"]), what="bob unregistered")
    stalled_writer.close()

    # it resumes with its last id and gets the rest (nothing was lost, only postponed)
    resumed = await ws_connect("/ws/notifications", bob["token"], last_event_id=str(published[0]))
    await resumed.recv_type("unread")
    got = [(await resumed.recv(timeout=15))["id"] for _ in published[1:]]
    assert got == published[1:]


async def read_ws_frames(reader, count: int) -> list:
    """``count`` text frames (parsed JSON) from a raw WebSocket; fails on a close frame."""
    frames = []
    while len(frames) < count:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(n)
        assert b0 & 0x0F != 0x8, f"closed with {struct.unpack('!H', payload[:2])[0]} after {len(frames)} frames"
        if b0 & 0x0F == 0x1:
            frames.append(json.loads(payload))
    return frames


@pytest.mark.gen_test(timeout=120)
async def test_a_replay_larger_than_the_limit_is_paced_not_closed(api, users, services, http_port):
    """A client closed as slow must be able to resume: its replay may hold far more than the limit."""
    (bob,) = await users("bob")
    ids = []
    for i in range(40):  # ~1.2 MB missed: many times the 64 KiB limit
        status, body = await api.call("POST", "/api/notifications",
                                      {"user_ids": [bob["id"]], "message": f"missed {i}", "data": {"blob": BLOB}},
                                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
        assert status == 202
        ids.extend(body["ids"])
    # Loopback kernel buffers hold megabytes; a real network path holds far less. Shrink the
    # server's send buffer of the resuming connection (found while its replay loads) so that
    # the replay must go through the server's own pending bytes.
    original = services.notifications.replay

    async def replay(user_id, after_id):
        for conn in services.registry.connections:
            if conn.user_id == bob["id"]:
                conn.wire.ws_connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return await original(user_id, after_id)
    services.notifications.replay = replay
    # a reading client behind a small receive window resumes from before all of them
    reader, writer = await open_stalled(http_port, "/ws/notifications", bob["token"] + "&last_event_id=0")
    frames = await asyncio.wait_for(read_ws_frames(reader, 1 + len(ids)), 60)
    assert frames[0]["type"] == "unread"
    assert [f["id"] for f in frames[1:]] == ids
    # and it is live afterwards
    status, body = await api.call("POST", "/api/notifications", {"user_ids": [bob["id"]], "message": "live"},
                                  headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    assert (await asyncio.wait_for(read_ws_frames(reader, 1), 15))[0]["id"] == body["ids"][0]
    writer.close()
