"""``--event-loop asyncio|uvloop``: a real server on each loop serves streams end to end.

The in-process test servers run on pytest-tornado's loop (asyncio, or uvloop with
TEST_EVENT_LOOP=uvloop; see conftest.py); these start ``run.py`` itself on each loop.
"""
import sys

import pytest

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import start_server
from tornado_app.config import load_config
from tornado_app.eventloop import loop_factory, run


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.gen_test(timeout=60)
async def test_server_serves_streams_on_each_event_loop(tmp_path, loop):
    """The start-up line names the loop; a WebSocket and an SSE stream get their unread state
    and a published notification."""
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/s.db", "--event-loop", loop,
                          LOG_LEVEL="info")
    try:
        assert f"{loop} event loop" in server.log()
        api = ApiClient(server.url)
        alice = await api.register("alice")
        ws = await WSClient.connect(server.ws_url, "/ws/notifications", alice["token"])
        assert (await ws.recv_type("unread"))["total"] == 0
        sse = await SSEClient.connect("127.0.0.1", server.port, "/sse/notifications", alice["token"])
        assert (await sse.next_type("unread"))["total"] == 0
        status, body = await api.call("POST", "/api/notifications", {"user_ids": [alice["id"]], "message": "hi"},
                                      token=SERVICE_TOKEN)
        assert status == 202
        assert (await ws.recv_type("announcement"))["id"] == body["ids"][0]
        assert (await sse.next_type("announcement"))["id"] == body["ids"][0]
        ws.close()
        sse.close()
    finally:
        assert server.stop() == 0


def test_event_loop_flag_is_checked():
    """The default is uvloop; only asyncio and uvloop are accepted."""
    assert load_config([])[1].event_loop == "uvloop"
    assert load_config(["--event-loop", "asyncio"])[1].event_loop == "asyncio"
    assert load_config([], {"EVENT_LOOP": "asyncio"})[1].event_loop == "asyncio"
    with pytest.raises(SystemExit):
        load_config(["--event-loop", "trio"])
    assert loop_factory("asyncio") is None
    assert loop_factory("uvloop") is not None  # installed from requirements.txt
    with pytest.raises(ValueError):
        loop_factory("trio")


def test_switch_interval_flag_is_checked_at_and_past_its_limits():
    """``--switch-interval-ms``: default 1; 0.1 to 100 accepted, just past either end refused."""
    assert load_config([])[1].switch_interval_ms == 1.0
    assert load_config([], {"SWITCH_INTERVAL_MS": "2.5"})[1].switch_interval_ms == 2.5
    for ok in ("0.1", "100"):
        assert load_config(["--switch-interval-ms", ok])[1].switch_interval_ms == float(ok)
    for bad in ("0.09", "100.1", "0"):
        with pytest.raises(SystemExit):
            load_config(["--switch-interval-ms", bad])


def test_a_serving_process_runs_with_the_configured_switch_interval():
    """eventloop.run sets Python's switch interval before the loop starts (run.py and each worker call it)."""
    before = sys.getswitchinterval()

    async def seen() -> float:
        return sys.getswitchinterval()

    try:
        assert run(seen(), "asyncio", 0.5) == pytest.approx(0.0005)
        assert run(seen(), "uvloop", 1.0) == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
