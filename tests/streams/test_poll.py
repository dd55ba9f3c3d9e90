"""Long-polling (/poll/notifications, /poll/chat): the protocol, presence between polls, limits.

Acceptance points 1 (protocol), 2 (chat presence with a grace period) and the limits of
issue 15; the nginx, browser, two-process and shutdown points are in test_poll_paths.py.
"""
import asyncio
import json

import pytest

from tests.conftest import SERVICE_TOKEN
from tornado_app.config import Config, load_config
from tests.support.streams import of_type, open_chat, send, wait_until

GRACE = 1.0  # poll_presence_grace of these tests: long enough to act within, short to wait out


@pytest.fixture
def config_overrides():
    return {"poll_presence_grace": GRACE}


async def poll(api, user, path="/poll/notifications", **query):
    """One poll; ``(status, body)``, and the elapsed seconds as ``api.elapsed``."""
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, body = await api.call("GET", f"{path}?{qs}" if qs else path, token=user["token"])
    api.elapsed = loop.time() - t0
    return status, body


def after(answer: dict) -> dict:
    """The query of the poll that follows ``answer``: its cursor, and its unread tag (the state is known)."""
    query = {"last_event_id": answer["last_event_id"]}
    if answer.get("unread_tag"):
        query["unread_tag"] = answer["unread_tag"]
    return query


async def publish(api, user_ids, message="hello"):
    """Publish one notification through the service API; its ids."""
    status, body = await api.call("POST", "/api/notifications", {"user_ids": user_ids, "message": message},
                                  token=SERVICE_TOKEN)
    assert status == 202, (status, body)
    return body["ids"]


async def pending_polls(services, user_id, n=1):
    """Wait until ``n`` polls of ``user_id`` are registered (waiting) on the server."""
    await wait_until(lambda: sum(1 for c in services.registry.connections
                                 if c.user_id == user_id and c.transport.startswith("poll_")) >= n,
                     what=f"{n} pending poll(s)")


# 1: protocol ----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_first_poll_answers_unread_at_once_as_one_plain_json_response(api, users):
    (bob,) = await users("bob")
    status, body = await poll(api, bob, timeout=20)
    assert status == 200
    assert body == {"events": [{"type": "unread", "total": 0, "chats": {}}], "last_event_id": "0",
                    "unread_tag": body["unread_tag"]}
    assert len(body["unread_tag"]) == 8
    headers = api.last_headers
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) > 0
    assert "Transfer-Encoding" not in headers and "Etag" not in headers
    # never compressed, even when the client would take it
    status, _ = await api.call("GET", "/poll/notifications", token=bob["token"],
                               headers={"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and "Content-Encoding" not in api.last_headers


@pytest.mark.gen_test(timeout=30)
async def test_poll_with_events_waiting_answers_at_once_in_order(api, users):
    (bob,) = await users("bob")
    _, first = await poll(api, bob, timeout=0)
    ids = [(await publish(api, [bob["id"]], f"n{i}"))[0] for i in range(3)]
    # The timeout is far past this test's own: only an immediate answer passes.
    status, body = await poll(api, bob, **after(first), timeout=55)
    assert status == 200
    assert [e["id"] for e in body["events"]] == ids
    assert [e["message"] for e in body["events"]] == ["n0", "n1", "n2"]
    assert body["last_event_id"] == str(ids[-1])
    # the same JSON objects as the SSE data: lines (the stored frame)
    assert set(body["events"][0]) == {"id", "type", "message", "timestamp"}


@pytest.mark.gen_test(timeout=30)
async def test_poll_waits_and_a_notification_during_the_wait_answers_it_within_100ms(api, users, services):
    (bob,) = await users("bob")
    _, first = await poll(api, bob, timeout=0)
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(poll(api.__class__(api.base_url), bob,
                                         **after(first), timeout=20))
    await pending_polls(services, bob["id"])
    assert not waiting.done()
    ids = await publish(api, [bob["id"]], "during the wait")
    published = loop.time()
    status, body = await waiting
    answered = loop.time()
    assert status == 200 and [e["id"] for e in body["events"]] == ids
    assert body["last_event_id"] == str(ids[0])
    assert answered - published < 0.1, f"answered {answered - published:.3f} s after the publish returned"


@pytest.mark.gen_test(timeout=30)
async def test_poll_times_out_with_an_empty_list(api, users, services):
    (bob,) = await users("bob")
    _, first = await poll(api, bob, timeout=0)
    status, body = await poll(api, bob, **after(first), timeout=1)
    assert status == 200
    assert body == {"events": [], "last_event_id": first["last_event_id"], "unread_tag": first["unread_tag"]}
    assert api.elapsed >= 0.9  # it did wait for its timeout
    assert services.registry.count() == 0  # unsubscribed after answering
    # timeout=0: answer at once, whatever there is
    status, body = await poll(api, bob, **after(first), timeout=0)
    assert status == 200 and body["events"] == []


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [{"replay_limit": 3}])
async def test_resync_past_the_replay_limit_then_from_now(api, users, config_overrides):
    (bob,) = await users("bob")
    _, first = await poll(api, bob, timeout=0)
    # at the limit: replayed
    ids = [(await publish(api, [bob["id"]], f"n{i}"))[0] for i in range(3)]
    status, body = await poll(api, bob, **after(first), timeout=0)
    assert [e["id"] for e in body["events"]] == ids
    # just past it: resync, and the answer's cursor is "now", so the next poll is plain again
    more = [(await publish(api, [bob["id"]], f"m{i}"))[0] for i in range(4)]
    status, body = await poll(api, bob, **after(first), timeout=0)
    assert status == 200 and body["events"] == [{"type": "resync"}]
    assert body["last_event_id"] == str(more[-1])
    status, body = await poll(api, bob, **after(body), timeout=0)
    assert body["events"] == []
    late = await publish(api, [bob["id"]], "after the resync")
    status, body = await poll(api, bob, last_event_id=str(more[-1]), unread_tag=first["unread_tag"], timeout=5)
    assert [e["id"] for e in body["events"]] == late


@pytest.mark.gen_test(timeout=120)
async def test_no_gap_no_duplicate_across_200_polls_with_concurrent_publishing(api, users):
    bob, carol = await users("bob", "carol")
    _, first = await poll(api, bob, timeout=0)
    published = []
    done = asyncio.Event()

    async def publisher():
        publisher_api = api.__class__(api.base_url)
        for i in range(150):
            if i % 10 == 9:  # broadcasts reach bob too
                status, body = await publisher_api.call("POST", "/api/notifications",
                                                        {"broadcast": True, "message": f"b{i}"},
                                                        token=SERVICE_TOKEN)
                assert status == 202
                published.extend(body["ids"])
            else:
                published.extend(await publish(publisher_api, [bob["id"], carol["id"]], f"p{i}"))
            await asyncio.sleep(0.002 * (i % 3))
        done.set()

    task = asyncio.ensure_future(publisher())
    got, cursor = [], first["last_event_id"]
    for i in range(200):
        # while publishing, alternate waiting and immediate polls; afterwards drain at once
        status, body = await poll(api, bob, last_event_id=cursor, unread_tag=first["unread_tag"],
                                  timeout=0 if done.is_set() or i % 2 else 2)
        assert status == 200, body
        got.extend(e["id"] for e in body["events"] if "id" in e)
        assert int(body["last_event_id"]) >= int(cursor)
        cursor = body["last_event_id"]
    await task
    status, body = await poll(api, bob, last_event_id=cursor, unread_tag=first["unread_tag"], timeout=0)
    got.extend(e["id"] for e in body["events"] if "id" in e)
    mine = sorted(set(published))  # bob's personal notification ids and the broadcasts
    bob_ids = [nid for nid in mine if nid in set(got)]
    assert got == sorted(got) and len(got) == len(set(got)), "ids strictly increasing, no duplicate"
    assert len(got) == 150 and got == bob_ids  # every one of bob's 150 (135 personal + 15 broadcast)


@pytest.mark.gen_test(timeout=30)
async def test_unread_state_changed_between_polls_comes_first(api, users):
    """Between two polls the client holds no stream: a changed unread state is sent with the next poll."""
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    _, first = await poll(api, bob, timeout=0)
    tag = first["unread_tag"]
    status, body = await poll(api, bob, **after(first), timeout=0)
    assert body["events"] == [] and body["unread_tag"] == tag  # unchanged: nothing, not even the state
    message = await send(api, alice, chat_id, "while bob is between polls")
    status, body = await poll(api, bob, **after(first), timeout=0)
    assert [e["type"] for e in body["events"]] == ["unread", "new_message"]
    assert body["events"][0]["total"] == 1 and body["unread_tag"] != tag
    # a read on another device changes the state without any notification
    status, _ = await api.call("POST", f"/api/chats/{chat_id}/read", {"message_id": message["id"]},
                               token=bob["token"])
    assert status == 200
    status, last = await poll(api, bob, **after(body), timeout=0)
    assert last["events"] == [{"type": "unread", "total": 0, "chats": {}}]
    assert last["unread_tag"] == first["unread_tag"]
    # without a tag, a poll gets the state at once (as a new stream does)
    status, plain = await poll(api, bob, last_event_id=last["last_event_id"], timeout=20)
    assert plain["events"] == last["events"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("config_overrides", [{"max_pending_bytes": 1000, "poll_presence_grace": GRACE}])
async def test_an_answer_stops_at_the_pending_bytes_limit_and_the_next_poll_continues(api, users, config_overrides):
    (bob,) = await users("bob")
    _, first = await poll(api, bob, timeout=0)
    ids = [(await publish(api, [bob["id"]], "x" * 200))[0] for i in range(9)]  # ~290 bytes each
    got, cursor, answers = [], first["last_event_id"], 0
    while len(got) < len(ids):
        status, body = await poll(api, bob, last_event_id=cursor, unread_tag=first["unread_tag"], timeout=0)
        assert status == 200 and body["events"]
        assert sum(len(json.dumps(e, separators=(",", ":"))) for e in body["events"]) <= 1000
        got.extend(e["id"] for e in body["events"])
        cursor = body["last_event_id"]
        answers += 1
    assert got == ids and answers >= 3


@pytest.mark.gen_test(timeout=30)
async def test_bad_input_and_limits(api, users, http_port):
    alice, bob, eve = await users("alice", "bob", "eve")
    chat_id = await open_chat(api, alice, bob)
    await publish(api, [bob["id"]])
    for query, code in [("timeout=56", "validation_error"), ("timeout=-1", "validation_error"),
                        ("timeout=abc", "validation_error"), ("last_event_id=abc", "invalid_last_event_id"),
                        ("last_event_id=-3", "invalid_last_event_id"), ("unread_tag=zz", "invalid_unread_tag")]:
        status, body = await api.call("GET", f"/poll/notifications?{query}", token=bob["token"])
        assert status == 400, (query, status, body)
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["code"] == code, (query, body)
    # at the maximum: accepted (and with an event waiting, answered at once)
    status, body = await poll(api, bob, last_event_id=0, timeout=55)
    assert status == 200 and [e["type"] for e in body["events"]] == ["unread", "announcement"]
    status, body = await api.call("GET", "/poll/notifications")
    assert status == 401 and body["error"]["code"] in ("missing_token", "unauthorized", "invalid_token")
    assert api.last_headers["WWW-Authenticate"].startswith("Bearer")
    status, body = await api.call("GET", "/poll/chat?chat_id=abc", token=bob["token"])
    assert status == 400
    status, body = await api.call("GET", f"/poll/chat?chat_id={chat_id}&timeout=0", token=eve["token"])
    assert status == 403 and body["error"]["code"] == "not_a_member"
    status, body = await api.call("POST", "/poll/notifications", {}, token=bob["token"])
    assert status == 405


# 2: /poll/chat and presence ----------------------------------------------------------------------

def split_id(event_id: str):
    m, n = event_id.split("-")
    return int(m), int(n)


@pytest.mark.gen_test(timeout=30)
async def test_chat_poll_carries_messages_typing_and_notifications(api, users, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    status, first = await poll(api, bob, "/poll/chat", timeout=0)
    assert status == 200 and [e["type"] for e in first["events"]] == ["unread"]
    assert split_id(first["last_event_id"]) == (0, 0)
    sent = await send(api, alice, chat_id, "over polling")
    status, body = await poll(api, bob, "/poll/chat", **after(first), timeout=5)
    frames = body["events"]
    assert {"type": "message", "message": sent} in frames
    notes = of_type(frames, "new_message")
    assert len(notes) == 1 and notes[0]["content_preview"] == "over polling"
    assert split_id(body["last_event_id"]) == (sent["id"], notes[0]["id"])
    cursor = body["last_event_id"]
    # typing is live only (not stored): it reaches a waiting poll
    waiting = asyncio.ensure_future(poll(api.__class__(api.base_url), bob, "/poll/chat", **after(body), timeout=10))
    await pending_polls(services, bob["id"])
    status, _ = await api.call("POST", f"/api/chats/{chat_id}/typing", token=alice["token"])
    assert status == 200
    status, body = await waiting
    assert of_type(body["events"], "typing") == [{"type": "typing", "chat_id": chat_id, "user_id": alice["id"],
                                                  "user_name": "Alice"}]
    assert body["last_event_id"] == cursor


@pytest.mark.gen_test(timeout=60)
async def test_chat_poller_is_active_while_polling_and_inactive_a_grace_period_after(api, users, services):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    loop = asyncio.get_running_loop()
    _, first = await poll(api, bob, "/poll/chat", chat_id=chat_id, timeout=0)
    cursor = first["last_event_id"]
    # while a poll is pending: active, the message comes without a notification
    waiting = asyncio.ensure_future(poll(api.__class__(api.base_url), bob, "/poll/chat", chat_id=chat_id,
                                         last_event_id=cursor, unread_tag=first["unread_tag"], timeout=10))
    await pending_polls(services, bob["id"])
    assert services.registry.is_active(bob["id"], chat_id)
    m1 = await send(api, alice, chat_id, "while polling")
    status, body = await waiting
    last_answer = loop.time()
    assert of_type(body["events"], "message", "new_message") == [{"type": "message", "message": m1}]
    cursor = body["last_event_id"]
    # between polls, within the grace period: still active
    m2 = await send(api, alice, chat_id, "between two polls")
    assert loop.time() - last_answer < GRACE, "the machine was too slow to test within the grace period"
    status, body = await poll(api, bob, "/poll/chat", chat_id=chat_id, last_event_id=cursor,
                              unread_tag=first["unread_tag"], timeout=0)
    assert of_type(body["events"], "message", "new_message") == [{"type": "message", "message": m2}]
    last_answer = loop.time()
    # no more polls: inactive once the grace period is over (one sweep later), not before
    await wait_until(lambda: not services.registry.is_active(bob["id"], chat_id), what="presence to end")
    assert loop.time() - last_answer >= GRACE * 0.95
    m3 = await send(api, alice, chat_id, "after the grace period")
    status, history = await api.call("GET", "/api/notifications", token=bob["token"])
    previews = [n["content_preview"] for n in history["notifications"] if n["type"] == "new_message"]
    assert previews == [m3["content"]]


def test_poll_settings_defaults_and_bounds():
    """Documented defaults (25 s wait, 55 s at most, 5 s presence grace); inconsistent values refused."""
    _, config = load_config([], environ={})
    assert (config.poll_timeout, config.poll_max_timeout, config.poll_presence_grace) == (25, 55, 5)
    assert load_config(["--poll-timeout", "55"], environ={})[1].poll_timeout == 55  # at the maximum
    with pytest.raises(SystemExit):
        load_config(["--poll-timeout", "56"], environ={})  # just past it
    assert load_config([], environ={"POLL_MAX_TIMEOUT": "120", "POLL_TIMEOUT": "90"})[1].poll_timeout == 90
    with pytest.raises(SystemExit):
        load_config(["--poll-presence-grace", "0"], environ={})
    assert Config().poll_presence_grace == 5


@pytest.mark.gen_test(timeout=30)
async def test_a_client_that_goes_away_mid_poll_is_unsubscribed_and_its_presence_ends(api, users, services,
                                                                                      http_port):
    alice, bob = await users("alice", "bob")
    chat_id = await open_chat(api, alice, bob)
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write((f"GET /poll/chat?chat_id={chat_id}&last_event_id=0-0&timeout=30 HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {bob['token']}\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # answered at once: the unread state
    assert head.startswith(b"HTTP/1.1 200")
    writer.write((f"GET /poll/chat?chat_id={chat_id}&last_event_id=0-0&unread_tag=00346dd7&timeout=30 HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {bob['token']}\r\n\r\n").encode())
    await writer.drain()
    await wait_until(lambda: services.registry.count() == 1, what="the second poll to wait")
    writer.close()
    await wait_until(lambda: services.registry.count() == 0, what="the poll to be unsubscribed")
    assert services.registry.is_active(bob["id"], chat_id)  # the grace period runs from here
    await wait_until(lambda: not services.registry.is_active(bob["id"], chat_id), what="presence to end")
