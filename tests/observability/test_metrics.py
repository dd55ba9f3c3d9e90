"""``/metrics``: the Prometheus text format, every named counter moving by the expected amount.

Issue 12, acceptance points 1 and 3 (in-process server, real sockets).
"""
import asyncio
import json

import pytest

from tests.support.clients import SSEClient
from tests.conftest import SERVICE_TOKEN
from tests.support.streams import wait_until
from tests.support.sockets import open_stalled
from tests.support.metrics import METRICS_TOKEN, scrape

LIMIT = 64 * 1024


@pytest.fixture
def config_overrides():
    """A metrics token, and a small per-connection limit so a stalled reader is cut quickly."""
    return {"metrics_token": METRICS_TOKEN, "max_pending_bytes": LIMIT}


def value(samples: dict, name: str, **labels) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    """How much a sample moved between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.gen_test(timeout=120)
async def test_each_counter_moves_with_traffic_and_labels_carry_no_identifiers(
        api, users, ws_connect, http_port, services):
    alice, bob, carol = await users("alice", "bob", "carol")
    status, chat = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    chat_id = chat["chat"]["id"]
    before = await scrape(api)

    # One stream of each transport, and a refused handshake (bad token).
    ws_chat = await ws_connect("/ws/chat", alice["token"])
    ws_notes = await ws_connect("/ws/notifications", bob["token"])
    sse_notes = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", bob["token"])
    sse_chat = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", bob["token"])
    for sse in (sse_notes, sse_chat):
        assert sse.status == 200 and (await sse.next_json())["type"] == "unread"
    await ws_notes.recv_type("unread")
    with pytest.raises(Exception):
        await ws_connect("/ws/chat", alice["token"] + "x")
    bad = await SSEClient.connect("127.0.0.1", http_port, "/sse/notifications", "not-a-token")
    assert bad.status == 401
    bad.close()

    # A send over the WebSocket (bob is not active in the chat: one new_message notification),
    # and a backend publish to bob.
    ack = await ws_chat.request({"type": "send_message", "chat_id": chat_id, "content": "hello metrics",
                                 "client_id": "m-1"}, "message_ack")
    assert ack["type"] == "message_ack"
    assert (await sse_chat.next_type("message"))["message"]["content"] == "hello metrics"
    status, _ = await api.call("POST", "/api/notifications", {"user_ids": [bob["id"]], "message": "hi"},
                               token=SERVICE_TOKEN)
    assert status == 202
    await ws_notes.recv_type("announcement")
    await sse_notes.next_type("announcement")

    # A slow consumer: carol's stalled stream is cut once it lags past the limit.
    reader, writer = await open_stalled(http_port, "/sse/notifications", carol["token"])
    for _ in range(200):
        if not any(c.user_id == carol["id"] for c in services.registry.connections):
            break
        await api.call("POST", "/api/notifications",
                       {"user_ids": [carol["id"]], "message": "x" * 900, "data": {"blob": "y" * 20000}},
                       token=SERVICE_TOKEN)
    await wait_until(lambda: not any(c.user_id == carol["id"] for c in services.registry.connections))
    writer.close()

    after = await scrape(api)
    for transport in ("ws_chat", "ws_notifications", "sse_notifications", "sse_chat"):
        assert delta(before, after, "squall_handshakes_total", transport=transport, outcome="accepted",
                     reason="ok") == (2 if transport == "sse_notifications" else 1), transport
        assert value(after, "squall_connections", transport=transport, process="0") == 1, transport
    assert delta(before, after, "squall_handshakes_total", transport="ws_chat", outcome="refused",
                 reason="invalid_token") == 1
    assert delta(before, after, "squall_handshakes_total", transport="sse_notifications", outcome="refused",
                 reason="invalid_token") == 1
    assert delta(before, after, "squall_errors_total", code="invalid_token") == 2
    assert delta(before, after, "squall_messages_stored_total") == 1
    published = delta(before, after, "squall_notifications_stored_total")
    assert published >= 3  # new_message + announcement to bob, then carol's until her cut
    assert delta(before, after, "squall_send_commit_seconds_count") == 1
    assert delta(before, after, "squall_slow_consumer_disconnects_total", transport="sse_notifications") == 1
    # The message reached bob's /sse/chat; notifications reached both of bob's notification streams.
    assert delta(before, after, "squall_events_delivered_total", transport="sse_chat", kind="chat") == 1
    assert delta(before, after, "squall_events_delivered_total", transport="ws_notifications", kind="notify") >= 2
    assert delta(before, after, "squall_delivery_seconds_count", kind="chat") == 1
    assert delta(before, after, "squall_delivery_seconds_count", kind="notify") >= 2
    assert delta(before, after, "squall_broker_messages_total", direction="out") >= 3
    assert value(after, "squall_database_up", process="0") == 1
    assert value(after, "squall_broker_up", process="0") == 1
    assert value(after, "squall_processes") == 1
    assert delta(before, after, "squall_http_requests_total", route="/api/notifications",
                 method="POST", status="202") >= 2

    # Bounded labels: no user id, username, chat id or content anywhere in a label value.
    forbidden = {str(u["id"]) for u in (alice, bob, carol)} | {u["username"] for u in (alice, bob, carol)}
    forbidden |= {str(chat_id), "hello metrics", "hi"}
    for (_, labels), _ in after.items():
        for _, label_value in labels:
            assert label_value not in forbidden, labels

    # A connection that closes leaves the gauge.
    sse_chat.close()
    await wait_until(lambda: services.registry.count() == 3)
    assert value(await scrape(api), "squall_connections", transport="sse_chat", process="0") == 0
    sse_notes.close()


@pytest.mark.gen_test(timeout=60)
async def test_scrapes_without_the_token_are_refused(api):
    status, err = await api.call("GET", "/metrics")
    assert status == 401 and err["error"]["code"] == "invalid_metrics_token"
    status, err = await api.call("GET", "/metrics", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and err["error"]["code"] == "invalid_metrics_token"
    status, text = await api.call("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and "squall_connections" in text


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{}])
async def test_main_port_refuses_metrics_when_no_token_is_set(api, config_overrides):
    status, err = await api.call("GET", "/metrics")
    assert status == 403 and err["error"]["code"] == "metrics_disabled"


@pytest.mark.gen_test(timeout=60)
async def test_metrics_port_serves_without_token(server_factory, database_url):
    from tests.support.clients import ApiClient
    from tests.support.procs import free_port
    port = free_port()
    server = server_factory("--database-url", database_url, "--metrics-port", str(port))
    status, text = await ApiClient(f"http://127.0.0.1:{port}").call("GET", "/metrics")
    assert status == 200 and "squall_processes 1.0" in text
    status, _ = await ApiClient(f"http://127.0.0.1:{port}").call("GET", "/api/me")
    assert status == 404  # the metrics listener serves /metrics only
    status, err = await ApiClient(server.url).call("GET", "/metrics")
    assert status == 403 and err["error"]["code"] == "metrics_disabled"
    assert json.dumps(err)  # the one JSON error shape
    await asyncio.sleep(0)
