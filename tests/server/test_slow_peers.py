"""Slow peers and descriptor exhaustion: header, body and idle timeouts; a process with few
descriptors keeps its WebSockets and /healthz working; accept failures are logged rarely."""
import asyncio
import json
import time

import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import ApiClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import start_server


def log_lines(server) -> int:
    with open(server.log_path, "rb") as f:
        return f.read().count(b"\n")


async def trickle_headers(port, closed_after, started):
    """Half a request, then one header line a second until the server closes the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    started.append(t0)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        for n in range(60):
            if await read_closed(reader, 1.0):
                break
            writer.write(b"X-Slow-%d: y\r\n" % n)
    except (ConnectionError, OSError):
        pass
    closed_after.append(time.monotonic() - t0)
    writer.close()


async def trickle_body(port, closed_after):
    """A complete request head, then ten body bytes a second."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n")
    t0 = time.monotonic()
    try:
        for n in range(60):
            if await read_closed(reader, 1.0):
                break
            writer.write(b"x" * 10)
    except (ConnectionError, OSError):
        pass
    closed_after.append(time.monotonic() - t0)
    writer.close()


async def read_closed(reader, wait: float) -> bool:
    """True when the server closed the connection within ``wait`` seconds."""
    try:
        data = await asyncio.wait_for(reader.read(4096), wait)
    except asyncio.TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return data == b"" or b"HTTP/1.1 5" in data or b"HTTP/1.1 4" in data


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_slow_headers_and_bodies_against_256_descriptors(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/s.db",
                          "--header-timeout", "2", "--body-timeout", "3", "--idle-timeout", "30",
                          nofile=256)
    try:
        api = ApiClient(server.url)
        users = [await api.register(f"u{n}_{int(time.time() * 1000) % 100000}") for n in range(3)]
        sockets = [await WSClient.connect(server.ws_url, "/ws/notifications", u["token"]) for u in users]
        for ws in sockets:
            assert (await ws.recv())["type"] == "unread"
        lines_before = log_lines(server)
        header_closed, header_started, body_closed = [], [], []
        slow = [asyncio.ensure_future(trickle_headers(server.port, header_closed, header_started)) for _ in range(300)]
        slow += [asyncio.ensure_future(trickle_body(server.port, body_closed)) for _ in range(50)]
        health = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        health_times, published = [], []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            resp = await health.fetch(server.url + "/healthz", request_timeout=1.0, raise_error=False)
            assert resp.code == 200, resp.code
            health_times.append(time.monotonic() - t0)
            status, body = await api.call("POST", "/api/notifications",
                                          {"user_ids": [u["id"] for u in users], "message": "still here"},
                                          token=SERVICE_TOKEN)
            assert status == 202, body
            published.append(body["ids"])
            await asyncio.sleep(0.25)
        await asyncio.wait_for(asyncio.gather(*slow), 30)
        # established WebSockets received every notification
        for n, ws in enumerate(sockets):
            got = [(await ws.recv_type("announcement"))["id"] for _ in published]
            assert sorted(got) == got and set(got) <= {i for ids in published for i in ids}
        assert max(health_times) < 1.0
        # the slow sockets were closed by the timeouts (or shed earlier to make room)
        assert len(header_closed) == 300 and max(header_closed) < 2 + 1.5, max(header_closed)
        assert len(body_closed) == 50 and max(body_closed) < 3 + 1.5, max(body_closed)
        assert log_lines(server) - lines_before < 100
        assert "Too many open files" not in server.log()
    finally:
        server.kill()


@pytest.mark.gen_test(timeout=60)
async def test_accept_failures_back_off_and_are_logged_at_most_once_per_10_s(tmp_path):
    server = start_server(tmp_path, "--database-url", f"sqlite:///{tmp_path}/s.db",
                          "--max-connections", "100000", "--header-timeout", "60", nofile=96)
    held = []
    try:
        lines_before = log_lines(server)
        for _ in range(150):  # more than the process has descriptors
            held.append(await asyncio.open_connection("127.0.0.1", server.port))
        await asyncio.sleep(3)
        log = server.log()
        assert log.count("accept failed") == 1, log[-2000:]
        assert log_lines(server) - lines_before < 5
        for reader, writer in held[:120]:
            writer.close()
        deadline = time.monotonic() + 10
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        while True:  # accepting again once descriptors are free
            resp = await client.fetch(server.url + "/healthz", request_timeout=1.0, raise_error=False)
            if resp.code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert resp.code == 200
        assert json.loads(resp.body) == {"status": "ok"}
    finally:
        for reader, writer in held:
            writer.close()
        server.kill()


async def raw_request(reader, writer, path="/healthz"):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
    await reader.readexactly(length)
    return int(head.split()[1])


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"header_timeout": 1.0, "idle_timeout": 3.0}])
async def test_header_and_idle_timeouts_and_streams_are_not_affected(http_server, http_port, users, ws_connect):
    alice, = await users("alice")
    ws = await ws_connect("/ws/notifications", alice["token"])
    assert (await ws.recv())["type"] == "unread"
    # a connection that sends nothing is closed after the header timeout
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", http_port)
    # a kept-alive connection may wait longer than the header timeout between requests
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    t0 = time.monotonic()
    assert await raw_request(reader, writer) == 200
    assert await asyncio.wait_for(silent_reader.read(), 5) == b""
    assert time.monotonic() - t0 < 2.5
    await asyncio.sleep(1.5)
    assert await raw_request(reader, writer) == 200  # 1.5 s idle: past the header timeout, still open
    t1 = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 6) == b""  # idle past 3 s: closed
    assert 2.5 < time.monotonic() - t1 < 4.5
    # the WebSocket, idle all along, is not affected
    await ws.send({"type": "ping"})
    assert await ws.recv() == {"type": "pong"}
    writer.close()
    silent_writer.close()
