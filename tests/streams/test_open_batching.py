"""The batched open path (``OpenStateBatcher``, ``UserService._load``): 2,000 streams of 100
uncached users open together against one process; each gets its own user's ``unread`` state
(read for many opens in one statement), and a notification published right after reaches
every one of them, once."""
import asyncio
import json

import pytest

from bench.protocols import SSEClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import open_chat, send

USERS = 100
STREAMS = 2000  # 20 per user, under the per-user cap of 32; half WebSocket, half SSE
IN_FLIGHT = 500  # handshakes at once (the test server's listen backlog is 128)


async def open_stream(port: int, cls, path: str, token: str, frames: list):
    """One raw stream whose payloads are appended to ``frames``; returns once the first arrived."""
    loop = asyncio.get_running_loop()
    holder = {}

    def factory():
        client = cls("127.0.0.1", port, f"{path}?access_token={token}",
                     on_payload=lambda c, payload, now: frames.append(json.loads(payload)))
        holder["c"] = client
        return client

    await loop.create_connection(factory, "127.0.0.1", port)
    await asyncio.wait_for(holder["c"].ready, 60)
    return holder["c"]


@pytest.mark.gen_test(timeout=240)
@pytest.mark.parametrize("config_overrides", [{"max_connections_per_address": 0}])  # 2000 from 127.0.0.1
async def test_2000_concurrent_opens_get_their_unread_state_then_a_notification(api, users, http_port, services):
    people = await users(*[f"u{i}" for i in range(USERS)])
    # Unread counts differ by user: the odd user of each pair has (pair % 4) unread messages.
    expected = {p["id"]: {"type": "unread", "total": 0, "chats": {}} for p in people}
    for k in range(0, USERS, 2):
        sender, reader = people[k], people[k + 1]
        n = (k // 2) % 4
        if n:
            chat_id = await open_chat(api, sender, reader)
            for i in range(n):
                await send(api, sender, chat_id, f"hello {i}")
            expected[reader["id"]] = {"type": "unread", "total": n, "chats": {str(chat_id): n}}
    before = services.open_state.opens, services.open_state.batches
    # As after a restart: no user is cached, so every open's token-version check misses.
    for uid in [p["id"] for p in people]:
        services.users.forget(uid)
    loads = services.users.loads

    gate = asyncio.Semaphore(IN_FLIGHT)
    frames = [[] for _ in range(STREAMS)]
    owners = [people[i % USERS] for i in range(STREAMS)]

    async def one(i):
        cls, path = (WSClient, "/ws/notifications") if i % 2 == 0 else (SSEClient, "/sse/notifications")
        async with gate:
            return await open_stream(http_port, cls, path, owners[i]["token"], frames[i])

    clients = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    try:
        for i in range(STREAMS):
            assert frames[i][0] == expected[owners[i]["id"]], (i, frames[i][:1])
        opens = services.open_state.opens - before[0]
        batches = services.open_state.batches - before[1]
        assert opens == STREAMS
        assert batches < opens, "concurrent opens share their unread read"
        assert 1 <= services.users.loads - loads < USERS, "the users' cache misses share their reads"

        status, body = await api.call("POST", "/api/notifications",
                                      {"user_ids": [p["id"] for p in people], "message": "right after"},
                                      token=SERVICE_TOKEN)
        assert status == 202, body
        ids = dict(zip([p["id"] for p in people], body["ids"]))

        def arrived():
            return sum(1 for f in frames if any(x.get("type") == "announcement" for x in f))

        for _ in range(600):
            if arrived() == STREAMS:
                break
            await asyncio.sleep(0.1)
        for i in range(STREAMS):
            got = [x["id"] for x in frames[i] if x.get("type") == "announcement"]
            assert got == [ids[owners[i]["id"]]], (i, got)
    finally:
        for c in clients:
            c.close()
