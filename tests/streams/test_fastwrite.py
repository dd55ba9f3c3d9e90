"""The fan-out's direct write path applies to the server's own client streams.

``handlers/fastwrite.write_direct`` sends with one ``send()`` only for the plain stream
types it knows; the hardened server wraps each accepted socket in ``CountedIOStream``. If
the two ever drift apart, every delivery silently takes Tornado's slower write path (a
third more CPU per delivery), so this checks the streams of real connections.
"""
import pytest

from handlers.fastwrite import _PLAIN
from tests.support.clients import SSEClient
from tests.support.streams import wait_until


@pytest.mark.gen_test(timeout=60)
async def test_websocket_and_sse_streams_take_the_direct_write_path(users, ws_connect, http_port, services):
    (alice,) = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    await ws.recv_type("unread")
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", alice["token"])
    await sse.next_type("unread")
    await wait_until(lambda: services.registry.count() == 2)
    kinds = {}
    for conn in services.registry.connections:
        handler = conn.wire  # the handler is the connection's transport
        stream = handler.ws_connection.stream if conn.transport.startswith("ws_") else handler._stream
        kinds[conn.transport] = type(stream)
    assert set(kinds) == {"ws_notifications", "sse_notifications"}
    assert all(kind in _PLAIN for kind in kinds.values()), kinds
    assert any(kind.__name__ == "CountedIOStream" for kind in kinds.values())  # the hardened server's own
    sse.close()
