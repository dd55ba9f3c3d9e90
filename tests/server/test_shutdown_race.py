"""A stream that finishes opening after the server began to shut down is ended too.

The shutdown ends the streams registered when it starts; a WebSocket (upgraded) or a live SSE
stream (detached from the HTTP layer) is no longer one of the HTTP connections Tornado drains,
so one that registers a moment later must notice the shutdown itself rather than stay open.
"""
import asyncio

import pytest

from tests.support.sockets import open_raw_stream, read_to_eof, wait_for


@pytest.fixture
def shutdown_during_open(services):
    """Make the server begin shutting down while the next stream reads its ``unread`` state."""
    original = services.open_state.state

    async def state(user_id, want):
        services.closing = True
        return await original(user_id, want)

    services.open_state.state = state
    yield
    services.open_state.state = original
    services.closing = False  # the fixture's own stop() runs the real shutdown afterwards


@pytest.mark.gen_test(timeout=60)
async def test_websocket_opened_during_shutdown_is_closed_with_1001(users, ws_connect, services,
                                                                   shutdown_during_open):
    (alice,) = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    while (frame := await ws.recv()) is not None:
        assert frame["type"] == "unread"
    assert ws.conn.close_code == 1001
    await wait_for(lambda: services.registry.count() == 0)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_sse_stream_opened_during_shutdown_ends(users, http_port, http_server, services,
                                                      shutdown_during_open, version):
    (alice,) = await users("alice")
    baseline = http_server.open_connections
    reader, writer = await open_raw_stream(http_port, alice["token"], version)
    received = await read_to_eof(reader)  # the stream ends by itself
    assert b'"type":"unread"' in received.replace(b" ", b"")
    await wait_for(lambda: services.registry.count() == 0 and http_server.open_connections == baseline)
    writer.close()
    await asyncio.sleep(0)
