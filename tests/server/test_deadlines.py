"""Header, idle and body deadlines kept by one sweep (tornado_app/httpserver.py ``Deadlines``).

The timeouts themselves, over real sockets, are in test_slow_peers.py; here: the queue rules
at and just past a deadline, the shedding order, and that a streamed upload keeps its own
(longer) body timeout while a JSON body is cut at the server's.
"""
import asyncio
import time

import pytest

from tornado_app.httpserver import TICK_MAX, TICK_MIN, Deadlines


class Conn:
    """Stands for an HTTP1ServerConnection: Deadlines only keys on it."""


def test_a_wait_expires_at_its_deadline_and_not_a_moment_before():
    d = Deadlines(first=10.0, idle=60.0, body=30.0)
    a = Conn()
    before = time.monotonic()
    d.wait(a, "first")
    after = time.monotonic()
    assert d.expired(before + 10.0 - 0.001) == []  # just before: kept
    assert a in d.waiting
    assert d.expired(after + 10.0) == [a]  # at the deadline: closed, and forgotten
    assert a not in d.waiting and d.expired(after + 100.0) == []


def test_each_kind_has_its_timeout_and_a_new_wait_replaces_the_old():
    d = Deadlines(first=1.0, idle=5.0, body=3.0)
    first, idle, body = Conn(), Conn(), Conn()
    now = time.monotonic()
    d.wait(first, "first")
    d.wait(idle, "idle")
    d.wait(body, "body")
    assert d.expired(now + 1.5) == [first]
    assert d.expired(now + 3.5) == [body]
    assert d.expired(now + 5.5) == [idle]
    c = Conn()
    d.wait(c, "first")
    d.wait(c, "body")  # headers came, now the body: only the body's deadline holds
    assert d.expired(time.monotonic() + 1.5) == []
    assert d.expired(time.monotonic() + 3.5) == [c]


def test_done_forgets_and_the_oldest_is_shed_first():
    d = Deadlines(first=10.0, idle=60.0, body=30.0)
    a, b, c = Conn(), Conn(), Conn()
    d.wait(a, "idle")
    d.wait(b, "first")
    d.wait(c, None)  # a wait bounded elsewhere (a streamed upload): shed, never expired here
    d.done(b)
    assert list(d.waiting) == [a, c]
    assert d.oldest() is a
    assert d.oldest() is c and not d.waiting
    assert d.expired(time.monotonic() + 1000.0) == []


def test_the_tick_is_a_tenth_of_the_shortest_timeout_within_bounds():
    assert Deadlines(10.0, 60.0, 30.0).tick == TICK_MAX
    assert Deadlines(2.0, 60.0, 30.0).tick == pytest.approx(0.2)
    assert Deadlines(0.1, 60.0, 30.0).tick == TICK_MIN


async def slow_body(port: int, head: bytes, size: int, seconds: float) -> bytes:
    """Send ``head``, then ``size`` body bytes spread over ``seconds``; what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    steps = 10
    try:
        for n in range(steps):
            await asyncio.sleep(seconds / steps)
            writer.write(b"x" * (size // steps))
            await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"body_timeout": 1.0}])
async def test_a_json_body_is_cut_at_the_body_timeout_but_an_upload_keeps_its_own(http_server, http_port, users):
    alice, = await users("alice")
    t0 = time.monotonic()
    cut = await slow_body(http_port, b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 1000\r\n\r\n", 1000, 2.5)
    assert b"HTTP/1.1 2" not in cut  # closed with nothing answered, after about a second
    assert time.monotonic() - t0 < 4.0
    head = (f"POST /api/uploads?filename=slow.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice['token']}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").encode()
    answer = await slow_body(http_port, head, 1000, 2.5)  # 2.5 s: past the body timeout, within the upload's
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
