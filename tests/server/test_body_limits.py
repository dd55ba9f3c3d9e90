"""Bodies over --max-body-bytes get the JSON 413 at any size, with a Content-Length or chunked,
answered without reading the rest; the connection then closes and the server keeps serving."""
import asyncio
import json

import pytest

KIB = 1024
MIB = 1024 * KIB
SIZES = [65 * KIB, MIB, 2 * MIB, 50 * MIB]


async def post_raw(port, path, token, size, chunked, piece=64 * KIB):
    """POST ``size`` bytes while reading the answer; returns (status, headers, body, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            f"Authorization: Bearer {token}"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0

    async def send_body():
        nonlocal sent
        block = b"x" * piece
        try:
            while sent < size:
                n = min(piece, size - sent)
                writer.write((b"%x\r\n%b\r\n" % (n, block[:n])) if chunked else block[:n])
                await writer.drain()
                sent += n
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server closed after answering: the rest is never read

    sender = asyncio.ensure_future(send_body())
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = response.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    closed = await asyncio.wait_for(reader.read(), 10) == b""  # the server closes the connection
    sender.cancel()
    writer.close()
    return int(status_line.split()[1]), headers, json.loads(body), sent, closed


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_every_oversize_body_gets_the_json_413_and_the_server_keeps_serving(api, users, http_port, config,
                                                                                   chunked):
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    path = f"/api/chats/{data['chat']['id']}/messages"
    for size in SIZES:
        status, headers, body, sent, closed = await post_raw(http_port, path, alice["token"], size, chunked)
        assert status == 413, (size, body)
        assert body == {"error": {"code": "payload_too_large",
                                  "message": f"The request body is over {config.max_body_bytes} bytes"}}
        assert headers["content-type"].startswith("application/json")
        assert closed
        if size == 50 * MIB:
            assert sent < size  # answered without reading the rest (kernel buffers hold a few MiB)
        status, _ = await api.call("POST", path, {"content": f"still serving after {size}"}, token=alice["token"])
        assert status == 201


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_limit_is_read_and_one_byte_more_is_refused(api, users, http_port, config, chunked):
    alice, bob = await users("alice", "bob")
    status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=alice["token"])
    path = f"/api/chats/{data['chat']['id']}/messages"
    base = json.dumps({"content": "at the limit", "pad": ""}).encode()
    exact = base[:-2] + b"p" * (config.max_body_bytes - len(base)) + b'"}'
    assert len(exact) == config.max_body_bytes
    status, resp = await api.call("POST", path, raw=exact, token=alice["token"])
    assert status == 201 and resp["message"]["content"] == "at the limit"
    over = exact[:-2] + b'p"}'
    status, resp = await api.call("POST", path, raw=over, token=alice["token"])
    assert status == 413 and resp["error"]["code"] == "payload_too_large"
    # chunked, over the limit by one byte, in small chunks
    status, headers, body, sent, closed = await post_raw(http_port, path, alice["token"],
                                                         config.max_body_bytes + 1, chunked, piece=1000)
    assert status == 413 and body["error"]["code"] == "payload_too_large"


@pytest.mark.gen_test(timeout=60)
async def test_oversize_bodies_on_other_routes_get_the_json_413_too(api, users, http_port):
    alice, = await users("alice")
    for path in ["/api/auth/login", "/ws/chat", "/", "/static/js/api.js", "/no/such/route"]:
        status, headers, body, sent, closed = await post_raw(http_port, path, alice["token"], 5 * MIB, False)
        assert status == 413 and body["error"]["code"] == "payload_too_large", path
    status, me = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 200
