"""WebSocket pings come from one timer for every socket (``Services._ping_websockets``), not a
task per connection: a socket that answers stays open, one that never answers is closed
once ``ws_ping_timeout`` has passed without its pong."""
import asyncio

import pytest

from bench.protocols import WSClient

INTERVAL = 0.3


@pytest.fixture
def config_overrides():
    return {"ws_ping_interval": INTERVAL, "ws_ping_timeout": INTERVAL}


class Silent(WSClient):
    """A client that counts pings and never answers them."""

    pings = 0

    def data_received(self, data: bytes):
        if not self.upgraded:
            super().data_received(data)
            return
        self.pings += data.count(b"\x89\x00")  # an empty ping frame from the server


async def open_client(cls, port, token):
    loop = asyncio.get_running_loop()
    holder = {}

    def factory():
        holder["c"] = cls("127.0.0.1", port, f"/ws/notifications?access_token={token}")
        return holder["c"]

    await loop.create_connection(factory, "127.0.0.1", port)
    return holder["c"]


@pytest.mark.slow
@pytest.mark.gen_test(timeout=30)
async def test_one_timer_pings_every_socket_and_closes_the_silent_one(users, http_port, services):
    alice, bob = await users("alice", "bob")
    answering = await open_client(WSClient, http_port, alice["token"])
    await asyncio.wait_for(answering.ready, 10)
    silent = await open_client(Silent, http_port, bob["token"])
    for _ in range(100):
        if services.registry.count() == 2:
            break
        await asyncio.sleep(0.05)
    assert services._pinger is not None and services._pinger.is_running()
    # Closed for its missing pong: a close frame, then (no answer either) the socket after 5 s.
    await asyncio.wait_for(silent.closed, 15)
    assert silent.pings >= 1
    await asyncio.sleep(4 * INTERVAL)  # several more rounds: the answering socket stays open
    assert not answering.closed.done(), answering.error
    assert services.registry.count() == 1
    answering.close()
