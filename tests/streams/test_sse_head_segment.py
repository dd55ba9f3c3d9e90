"""An SSE stream's head, ``retry:`` and first event leave together (TCP_CORK until the stream
has started: handlers/sse.py), and the socket is uncorked afterwards, so later events leave at
once. Checked from both ends, as tests/streams/test_ws_handshake_segment.py does for the 101."""
from __future__ import annotations

import asyncio
import socket

import pytest

from tests.conftest import SERVICE_TOKEN
from tests.support.server_sockets import corked, server_side

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")


@pytest.mark.gen_test(timeout=30)
async def test_the_head_retry_and_unread_event_arrive_in_one_read_then_events_flow(api, users, http_port):
    (bob,) = await users("bob")
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write((f"GET /sse/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bob['token']}\r\n"
                  "Accept: text/event-stream\r\n\r\n").encode())
    try:
        first = await asyncio.wait_for(reader.read(65536), 10)
        head, _, body = first.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"retry: " in body and b'"type":"unread"' in body, first  # one read: one segment
        assert not corked(server_side(writer))  # uncorked: later events leave at once
        status, _ = await api.call("POST", "/api/notifications", {"user_ids": [bob["id"]], "message": "next"},
                                   token=SERVICE_TOKEN)
        assert status == 202
        later = await asyncio.wait_for(reader.read(65536), 10)
        assert b'"next"' in later, later
    finally:
        writer.close()
