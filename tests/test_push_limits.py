"""The push queue bound (--push-queue): pushes past it are dropped and counted, never waited for."""
import pytest

from tests.push_service import PushServer
from tests.test_push import subscribe
from tests.test_streams_helpers import open_chat, send, wait_until


@pytest.fixture
def config_overrides():
    return {"push_allow_http": True, "push_queue": 1, "push_threads": 1}


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


@pytest.mark.gen_test(timeout=60)
async def test_push_queue_at_and_past_its_bound(api, users, push_server, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    metrics = services.metrics.metrics
    keys = await subscribe(api, bob, push_server.endpoint("one"))
    await send(api, alice, chat_id, "fits")  # one push, a queue of one: sent
    (push,) = await push_server.wait_for(1)
    assert keys.decrypt(push[2])["body"] == "fits"
    await wait_until(lambda: metrics.pushes["sent"] == 1 and metrics.push_queue == 0, what="sent")
    assert metrics.pushes["dropped"] == 0

    await subscribe(api, bob, push_server.endpoint("two"))
    await send(api, alice, chat_id, "one too many")  # two pushes at once, a queue of one
    await push_server.wait_for(2)
    await wait_until(lambda: metrics.pushes["sent"] == 2 and metrics.push_queue == 0, what="second sent")
    assert metrics.pushes["dropped"] == 1
    assert len(push_server.received) == 2
