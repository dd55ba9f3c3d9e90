"""Paths with NUL, bad escapes or invalid UTF-8: a 4xx, one access-log line, no traceback (issue 20, item 4).

The requests are written byte for byte on a raw socket (an HTTP client would re-encode
the path), against the in-process server; the log is captured with caplog.
"""
import asyncio
import logging

import pytest

BAD_PATHS = [
    "/static/%00", "/%ff", "/api/me%00", "/static/a%00b.js", "/static/..%2f", "/static/..%2f..%2fetc%2fpasswd",
    "/static/%c0%ae", "/static/%c0%ae%c0%ae/etc/passwd",  # overlong "."
    "/%e0%80%af", "/static/%c0%af",  # overlong "/"
    "/api/%ed%a0%80",  # a UTF-16 surrogate in UTF-8
    "/static/%zz", "/static/a%", "/api/chats/1%00", "/chat/%ff", "/sse/chat%00", "/ws/chat%ff",
    "/static/js/%ff.js", "/%00", "/api/users%c3",
]


async def raw_request(port: int, method: str, path: str, headers: str = "") -> tuple:
    """``(status, raw response)`` for one request written exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n"
                 .encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.gen_test(timeout=60)
async def test_bad_paths_are_4xx_with_one_access_line_and_no_traceback(http_server, http_port, caplog):
    caplog.set_level(logging.DEBUG)
    for method in ("GET", "HEAD", "POST"):
        for path in BAD_PATHS:
            caplog.clear()
            status, data = await raw_request(http_port, method, path)
            assert 400 <= status < 500, (method, path, data)
            if method != "HEAD":
                assert b'"error":{"code":"' in data, (method, path, data)
            records = caplog.records
            access = [r for r in records if r.name == "tornado.access"]
            assert len(access) == 1 and f" {method} {path} " in access[0].getMessage(), (method, path, records)
            assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], (method, path, records)
    # The three of the issue, exactly: 400 invalid_path.
    for path in ("/static/%00", "/%ff", "/api/me%00"):
        status, data = await raw_request(http_port, "GET", path)
        assert status == 400 and b'"code":"invalid_path"' in data, data


@pytest.mark.gen_test(timeout=60)
async def test_good_escapes_still_reach_their_routes(http_server, http_port):
    """A valid escape of an ordinary character is not refused: the route answers as before."""
    status, data = await raw_request(http_port, "GET", "/static/js/%61pi.js")  # %61 = "a"
    assert status == 200 and b"export" in data
    status, data = await raw_request(http_port, "GET", "/static/caf%C3%A9.js")  # valid UTF-8, no such file
    assert status == 404 and b'"code":"not_found"' in data
