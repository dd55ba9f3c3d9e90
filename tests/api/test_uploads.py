"""Attachments (issue 25, item 5; acceptance 3): uploads streamed to disk with a size limit, a
per-user quota and types decided from the bytes; images measured and thumbnailed; files served
only through signed, expiring links issued to members of the chat; attachments on WebSocket
and HTTP sends, in history and live events; orphans swept. CI runs this module on SQLite and
PostgreSQL (tests/api is marked storage)."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from urllib.parse import quote

import pytest
import tornado.httpclient
from PIL import Image

from models import Upload
from tornado_app.services.chat.media import MAX_IMAGE_PIXELS, THUMBNAIL_SIZE
from tornado_app.services.chat.uploads import sanitize_filename

LIMIT = 64 * 1024
QUOTA = 4 * LIMIT
OVERRIDES = {"max_upload_bytes": LIMIT, "upload_quota_bytes": QUOTA}
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def config_overrides():
    return dict(OVERRIDES)


def image_bytes(fmt: str, size=(40, 30), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None).save(out, fmt)
    return out.getvalue()


async def upload(api, user, data: bytes, filename: str = "file.bin", expect: int = 201, headers=None):
    status, body = await api.call("POST", "/api/uploads?filename=" + quote(filename), raw=data,
                                  token=user["token"], headers={**OCTET, **(headers or {})})
    assert status == expect, (status, body)
    return body


async def chat_of(api, a, b):
    status, data = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, data
    return data["chat"]["id"]


async def send(api, user, chat_id, body, expect=201):
    status, data = await api.call("POST", f"/api/chats/{chat_id}/messages", body, token=user["token"])
    assert status == expect, data
    return data


async def link(api, user, upload_id, expect=200):
    status, data = await api.call("GET", f"/api/uploads/{upload_id}/link", token=user["token"])
    assert status == expect, data
    return data


async def fetch(base: str, path: str):
    client = tornado.httpclient.AsyncHTTPClient()
    return await client.fetch(base + path, raise_error=False, request_timeout=10)


def base_of(api) -> str:
    return api.base_url


@pytest.mark.gen_test(timeout=60)
async def test_size_limit_at_and_one_past(api, users):
    alice, = await users("alice")
    at = await upload(api, alice, b"a" * LIMIT, "at.txt")
    assert at["size"] == LIMIT and at["content_type"] == "text/plain; charset=utf-8"
    # one past, refused from Content-Length before the body is read
    err = await upload(api, alice, b"a" * (LIMIT + 1), "past.txt", expect=413)
    assert err["error"]["code"] == "upload_too_large"

    # chunked (no Content-Length): refused while streaming, at the byte past the limit
    async def producer(write):
        for _ in range((LIMIT + 1) // 1000 + 1):
            await write(b"a" * 1000)

    client = tornado.httpclient.AsyncHTTPClient()
    resp = await client.fetch(base_of(api) + "/api/uploads?filename=x.txt", method="POST", body_producer=producer,
                              headers={**OCTET, "Authorization": f"Bearer {alice['token']}"}, raise_error=False,
                              request_timeout=10)
    assert resp.code == 413 and b"upload_too_large" in resp.body
    # an empty upload, a wrong request type, no token
    assert (await upload(api, alice, b"", "e.txt", expect=400))["error"]["code"] == "empty_upload"
    err = await upload(api, alice, b"abc", "t.txt", expect=415, headers={"Content-Type": "text/plain"})
    assert err["error"]["code"] == "octet_stream_required"
    status, err = await api.call("POST", "/api/uploads", raw=b"abc", headers=OCTET)
    assert status == 401


@pytest.mark.gen_test(timeout=60)
async def test_quota_at_and_past(api, users, services):
    alice, bob = await users("alice", "bob")
    for _ in range(3):
        await upload(api, alice, b"q" * LIMIT, "q.txt")
    await upload(api, alice, b"q" * LIMIT, "last.txt")  # exactly the quota
    assert await services.uploads.used_bytes(alice["id"]) == QUOTA
    err = await upload(api, alice, b"q", "one.txt", expect=413)
    assert err["error"]["code"] == "upload_quota_exceeded"
    await upload(api, bob, b"b" * LIMIT, "bob.txt")  # per user


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_uploads_cannot_pass_the_quota_together(api, users, services, config):
    alice, = await users("alice")
    for _ in range(3):
        await upload(api, alice, b"q" * LIMIT, "q.txt")
    # each fits alone; together they would pass: the row's transaction checks again
    results = await asyncio.gather(*[api.call("POST", "/api/uploads?filename=c.txt", raw=b"c" * LIMIT,
                                              token=alice["token"], headers=OCTET) for _ in range(2)])
    assert sorted(status for status, _ in results) == [201, 413], results
    assert [b["error"]["code"] for status, b in results if status == 413] == ["upload_quota_exceeded"]
    assert await services.uploads.used_bytes(alice["id"]) == QUOTA
    stored = [n for _, _, names in os.walk(os.path.join(config.upload_dir, "files")) for n in names]
    assert len(stored) == 4  # the refused one left no file


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("head", [b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00",
                                  b"\x7fELF\x02\x01\x01\x00", b"#!/bin/sh\nrm -rf /\n", b"MZ"])
async def test_renamed_executable_refused_by_its_bytes(api, users, services, head):
    alice, = await users("alice")
    err = await upload(api, alice, head + b"\x00" * 2000, "cute-cat.png", expect=415)
    assert err["error"]["code"] == "unsupported_media_type"
    assert await services.uploads.used_bytes(alice["id"]) == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the server ignores it too (media.py)
async def test_each_allowed_type_and_refusals(api, users, services, config):
    alice, = await users("alice")
    cases = [(image_bytes("PNG"), "a.exe", "image/png"), (image_bytes("JPEG"), "b.txt", "image/jpeg"),
             (image_bytes("GIF", mode="P"), "c", "image/gif"), (image_bytes("WEBP"), "d.pdf", "image/webp"),
             (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "e.png", "application/pdf"),
             ("Grüße, 世界\n\ttab\r\n".encode(), "f.png", "text/plain; charset=utf-8")]
    for data, name, expected in cases:
        got = await upload(api, alice, data, name)
        assert got["content_type"] == expected, name
        assert got["filename"] == name and got["size"] == len(data)
        assert Upload.get_by_id(got["id"]).content_type == expected
    # not text: invalid UTF-8, control bytes; an image that does not decode
    for data in (b"\xff\xfe\xfa" * 10, b"hello\x00world" * 3, b"abc\x1b[31m" * 4):
        assert (await upload(api, alice, data, "x.txt", expect=415))["error"]["code"] == "unsupported_media_type"
    broken = image_bytes("PNG")[:40]
    assert (await upload(api, alice, broken, "x.png", expect=415))["error"]["code"] == "undecodable_image"
    # a decompression bomb: a small file whose header claims 100 million pixels, refused before decoding;
    # MAX_IMAGE_PIXELS itself is accepted, one row more is not
    bomb = image_bytes("PNG", (10_000, 10_000), mode="1")
    assert len(bomb) < LIMIT
    assert (await upload(api, alice, bomb, "bomb.png", expect=415))["error"]["code"] == "image_too_large"
    assert MAX_IMAGE_PIXELS == 8000 * 6000
    at = await upload(api, alice, image_bytes("PNG", (8000, 6000), mode="1"), "at.png")
    assert (at["width"], at["height"]) == (8000, 6000)
    past = image_bytes("PNG", (8000, 6001), mode="1")
    assert (await upload(api, alice, past, "past.png", expect=415))["error"]["code"] == "image_too_large"
    # a name is only a label: no path, no control characters
    got = await upload(api, alice, b"hi", "..\\..\\etc/\u202epasswd.txt")
    assert got["filename"] == "passwd.txt"
    assert sanitize_filename("a\x07b\n.txt") == "ab.txt" and sanitize_filename("...") == "upload"
    assert len(sanitize_filename("x" * 300 + ".jpeg")) == 255 and sanitize_filename("x" * 300 + ".jpeg").endswith(".jpeg")
    # refused uploads leave no file behind
    tmp = os.path.join(config.upload_dir, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []


@pytest.mark.gen_test(timeout=60)
async def test_image_dimensions_and_thumbnail(api, users):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    got = await upload(api, alice, image_bytes("PNG", (400, 200)), "wide.png")
    assert (got["width"], got["height"]) == (400, 200)
    await send(api, alice, chat, {"content": "look", "attachments": [got["id"]]})
    links = await link(api, bob, got["id"])
    resp = await fetch(base_of(api), links["thumbnail_url"])
    assert resp.code == 200 and resp.headers["Content-Type"] == "image/png"
    thumb = Image.open(io.BytesIO(resp.body))
    assert thumb.size == (THUMBNAIL_SIZE[0], THUMBNAIL_SIZE[0] // 2)
    resp = await fetch(base_of(api), links["url"])
    assert resp.code == 200 and Image.open(io.BytesIO(resp.body)).size == (400, 200)
    text = await upload(api, alice, b"plain", "a.txt")
    assert text["width"] is None and (await link(api, alice, text["id"]))["thumbnail_url"] is None


@pytest.mark.gen_test(timeout=60)
async def test_only_members_get_links_and_files(api, users, services):
    alice, bob, carol = await users("alice", "bob", "carol")
    chat = await chat_of(api, alice, bob)
    got = await upload(api, alice, b"secret plan", "plan.txt")
    # before it is sent, only its owner sees it
    assert (await link(api, bob, got["id"], expect=404))["error"]["code"] == "upload_not_found"
    await link(api, alice, got["id"])
    await send(api, alice, chat, {"content": "", "attachments": [got["id"]]})
    links = await link(api, bob, got["id"])
    assert (await link(api, carol, got["id"], expect=404))["error"]["code"] == "upload_not_found"
    assert (await link(api, carol, "x" * 22, expect=404))["error"]["code"] == "upload_not_found"
    status, _ = await api.call("GET", f"/api/uploads/{got['id']}/link")
    assert status == 401
    # the file itself: without a valid signature nobody gets it
    base = base_of(api)
    for path in (f"/files/{got['id']}", f"/files/{got['id']}?exp={int(time.time()) + 60}&sig=AAAA",
                 links["url"].replace("sig=", "sig=x"), links["url"].replace("exp=", "exp=9")):
        resp = await fetch(base, path)
        assert resp.code == 403 and b"invalid_signature" in resp.body, path
    other = await upload(api, carol, b"carol's", "c.txt")
    resp = await fetch(base, links["url"].replace(got["id"], other["id"]))  # a signature is for one id
    assert resp.code == 403 and b"invalid_signature" in resp.body
    resp = await fetch(base, links["url"])
    assert resp.code == 200 and resp.body == b"secret plan"
    # a text file has no thumbnail; a row whose file is gone (a restore without the files) is 404
    resp = await fetch(base, services.uploads.signed_path(got["id"], "thumb", int(time.time()) + 60))
    assert resp.code == 404 and b"upload_not_found" in resp.body
    os.unlink(services.uploads.store.path_of(got["id"]))
    resp = await fetch(base, links["url"])
    assert resp.code == 404 and b"upload_not_found" in resp.body


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**OVERRIDES, "upload_url_ttl": 1}])
async def test_expired_link_refused(api, users, services):
    alice, = await users("alice")
    got = await upload(api, alice, b"soon gone", "a.txt")
    links = await link(api, alice, got["id"])
    assert (await fetch(base_of(api), links["url"])).code == 200
    await asyncio.sleep(2.1)
    resp = await fetch(base_of(api), links["url"])
    assert resp.code == 403 and b"link_expired" in resp.body
    # a link signed as already expired, with the server's own key
    path = services.uploads.signed_path(got["id"], "file", int(time.time()) - 1)
    resp = await fetch(base_of(api), path)
    assert resp.code == 403 and b"link_expired" in resp.body


@pytest.mark.gen_test(timeout=60)
async def test_file_response_headers_and_no_capability_in_the_log(api, users, caplog):
    alice, = await users("alice")
    text = await upload(api, alice, "ünïcode\n".encode(), 'report "Q3"; ü.txt')
    image = await upload(api, alice, image_bytes("JPEG"), "photo.jpg")
    caplog.set_level(logging.INFO, logger="tornado.access")
    resp = await fetch(base_of(api), (await link(api, alice, text["id"]))["url"])
    h = resp.headers
    assert resp.code == 200 and resp.body == "ünïcode\n".encode()
    assert h["Content-Type"] == "text/plain; charset=utf-8"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert h["Cache-Control"].startswith("private")
    assert h["Content-Disposition"] == ("attachment; filename=\"report _Q3__ _.txt\"; "
                                        "filename*=UTF-8''report%20%22Q3%22%3B%20%C3%BC.txt")
    image_url = (await link(api, alice, image["id"]))["url"]
    resp = await fetch(base_of(api), image_url)
    assert resp.headers["Content-Disposition"].startswith("inline; ") and resp.headers["Content-Type"] == "image/jpeg"
    head = await tornado.httpclient.AsyncHTTPClient().fetch(base_of(api) + image_url, method="HEAD", raise_error=False)
    assert head.code == 200 and head.body == b"" and head.headers["Content-Length"] == str(image["size"])
    def lines():
        return [r for r in caplog.records if r.name == "tornado.access" and "/files/" in r.getMessage()]
    for _ in range(50):  # the client has the whole body before the server logs the request
        if len(lines()) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(lines()) == 3, "each file request is in the access log"
    for record in lines():
        assert "sig=" not in record.getMessage() and "exp=" not in record.getMessage()
        assert not any("sig=" in str(v) for v in vars(record).values())


@pytest.mark.gen_test(timeout=60)
async def test_attachments_on_http_and_ws_sends(api, users, ws_connect):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    bob_ws = await ws_connect("/ws/chat", bob["token"])
    alice_ws = await ws_connect("/ws/chat", alice["token"])
    png = await upload(api, alice, image_bytes("PNG", (64, 48)), "p.png")
    pdf = await upload(api, alice, b"%PDF-1.7\nbody\n", "doc.pdf")
    sent = (await send(api, alice, chat, {"content": "two files", "attachments": [png["id"], pdf["id"]]}))["message"]
    expected = [{"id": png["id"], "content_type": "image/png", "size": png["size"], "filename": "p.png",
                 "width": 64, "height": 48},
                {"id": pdf["id"], "content_type": "application/pdf", "size": pdf["size"], "filename": "doc.pdf",
                 "width": None, "height": None}]
    assert sent["attachments"] == expected
    live = await bob_ws.recv_type("message")
    assert live["message"]["id"] == sent["id"] and live["message"]["attachments"] == expected

    # over the WebSocket, with no caption, and resent with the same client_id
    txt = await upload(api, alice, b"notes", "n.txt")
    frame = {"type": "send_message", "chat_id": chat, "attachments": [txt["id"]], "client_id": "c-1"}
    ack = await alice_ws.request(frame, "message_ack", "error")
    assert ack["type"] == "message_ack", ack
    assert ack["message"]["content"] == "" and [a["id"] for a in ack["message"]["attachments"]] == [txt["id"]]
    assert (await bob_ws.recv_type("message"))["message"]["attachments"][0]["filename"] == "n.txt"
    again = await alice_ws.request(frame, "message_ack", "error")
    assert again["type"] == "message_ack" and again["message"] == ack["message"]  # attachments included

    status, data = await api.call("GET", f"/api/chats/{chat}/messages", token=bob["token"])
    assert status == 200
    by_id = {m["id"]: m for m in data["messages"]}
    assert by_id[sent["id"]]["attachments"] == expected
    assert [a["id"] for a in by_id[ack["message"]["id"]]["attachments"]] == [txt["id"]]
    # the chat list's last message, and a client resuming from an older event (any transport's replay)
    status, chats = await api.call("GET", "/api/chats", token=bob["token"])
    assert chats["chats"][0]["last_message"]["attachments"] == ack["message"]["attachments"]
    resumed = await ws_connect("/ws/chat", bob["token"], last_event_id=str(sent["id"] - 1))
    replayed = [(await resumed.recv_type("message"))["message"] for _ in range(2)]
    assert [m["id"] for m in replayed] == [sent["id"], ack["message"]["id"]]
    assert replayed[0]["attachments"] == expected and replayed[1]["attachments"] == ack["message"]["attachments"]
    plain = (await send(api, bob, chat, {"content": "no files"}))["message"]
    assert "attachments" not in plain


@pytest.mark.gen_test(timeout=60)
async def test_bad_attachments_refused(api, users, ws_connect, services):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    mine = await upload(api, alice, b"mine", "m.txt")
    bobs = await upload(api, bob, b"bob's", "b.txt")
    cases = [("not-a-list", "invalid_attachments", 400), ([1, 2], "invalid_attachments", 400),
             (["short"], "invalid_attachments", 400), ([bobs["id"]], "attachment_not_found", 400),
             (["A" * 22], "attachment_not_found", 400)]
    for attachments, code, status in cases:
        err = await send(api, alice, chat, {"content": "x", "attachments": attachments}, expect=status)
        assert err["error"]["code"] == code, attachments
    limit = services.uploads.limits.max_attachments
    many = [(await upload(api, alice, b"f%d" % i, "f.txt"))["id"] for i in range(limit + 1)]
    err = await send(api, alice, chat, {"content": "x", "attachments": many}, expect=400)
    assert err["error"]["code"] == "too_many_attachments"
    ok = await send(api, alice, chat, {"content": "x", "attachments": many[:limit]})  # at the limit
    assert len(ok["message"]["attachments"]) == limit
    await send(api, alice, chat, {"content": "", "attachments": [mine["id"]]})
    err = await send(api, alice, chat, {"content": "again", "attachments": [mine["id"]]}, expect=400)
    assert err["error"]["code"] == "attachment_already_used"
    # empty content needs attachments
    assert (await send(api, alice, chat, {"content": " "}, expect=400))["error"]["code"] == "empty_content"
    ws = await ws_connect("/ws/chat", alice["token"])
    err = await ws.request({"type": "send_message", "chat_id": chat, "content": "x",
                            "attachments": [bobs["id"]]}, "error", "message_ack")
    assert err["type"] == "error" and err["code"] == "attachment_not_found"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_upload_bytes": 8 * 1024 * 1024}])
async def test_binary_of_unknown_type_refused_and_not_kept(api, users, config):
    alice, = await users("alice")
    sent = 0

    async def producer(write):  # a zip-like body: no allowed magic number, not text
        nonlocal sent
        for _ in range(8):
            await write(b"PK\x03\x04" + os.urandom(1024 * 1024 - 4))
            sent += 1

    client = tornado.httpclient.AsyncHTTPClient()
    resp = await client.fetch(api.base_url + "/api/uploads?filename=a.zip", method="POST", body_producer=producer,
                              headers={**OCTET, "Authorization": f"Bearer {alice['token']}",
                                       "Content-Length": str(8 * 1024 * 1024)}, raise_error=False,
                              request_timeout=20)
    assert resp.code == 415 and b"unsupported_media_type" in resp.body
    assert sent == 8  # answered when the body ended: a client still sending could miss an earlier answer
    # nothing of it kept: the first block was written, the rest dropped, the partial file removed
    tmp = os.path.join(config.upload_dir, "tmp")
    for _ in range(100):
        if not os.listdir(tmp):
            break
        await asyncio.sleep(0.02)
    assert os.listdir(tmp) == [] and Upload.select().count() == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"max_upload_bytes": 8 * 1024 * 1024}])
async def test_interrupted_upload_leaves_no_file(api, users, config, http_port):
    alice, = await users("alice")
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write((f"POST /api/uploads?filename=half.txt HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {alice['token']}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {8 * 1024 * 1024}\r\n\r\n").encode() + b"h" * (3 * 1024 * 1024))
    await writer.drain()
    tmp = os.path.join(config.upload_dir, "tmp")
    for _ in range(200):  # blocks of 1 MiB reach the temporary file while the body streams in
        if os.path.isdir(tmp) and os.listdir(tmp):
            break
        await asyncio.sleep(0.02)
    assert os.listdir(tmp), "the partial upload is on disk"
    writer.close()
    for _ in range(200):
        if not os.listdir(tmp):
            break
        await asyncio.sleep(0.02)
    assert os.listdir(tmp) == []
    assert Upload.select().count() == 0


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_sends_of_one_upload_attach_it_once(api, users):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    got = await upload(api, alice, b"once", "o.txt")
    results = await asyncio.gather(*[api.call("POST", f"/api/chats/{chat}/messages",
                                              {"content": f"try {i}", "attachments": [got["id"]]},
                                              token=alice["token"]) for i in range(5)])
    statuses = sorted(s for s, _ in results)
    assert statuses == [201, 400, 400, 400, 400], results
    assert {b["error"]["code"] for s, b in results if s == 400} == {"attachment_already_used"}
    status, data = await api.call("GET", f"/api/chats/{chat}/messages", token=bob["token"])
    assert sum(1 for m in data["messages"] if m.get("attachments")) == 1


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{**OVERRIDES, "orphan_upload_ttl": 1.0, "upload_timeout": 1.0}])
async def test_orphans_and_interrupted_uploads_swept(api, users, config, services):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    kept = await upload(api, alice, image_bytes("PNG"), "kept.png")
    await send(api, alice, chat, {"content": "", "attachments": [kept["id"]]})
    orphan = await upload(api, alice, image_bytes("PNG"), "orphan.png")
    files = os.path.join(config.upload_dir, "files")
    stored = {name for _, _, names in os.walk(files) for name in names}
    assert {kept["id"], kept["id"] + ".thumb", orphan["id"], orphan["id"] + ".thumb"} <= stored
    stale = os.path.join(config.upload_dir, "tmp", "0" * 32 + ".part")  # left by a crashed process
    with open(stale, "wb") as f:
        f.write(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    deadline = time.monotonic() + 15
    while Upload.get_or_none(Upload.id == orphan["id"]) is not None or os.path.exists(stale):
        assert time.monotonic() < deadline, "the sweep did not run"
        await asyncio.sleep(0.2)
    stored = {name for _, _, names in os.walk(files) for name in names}
    assert orphan["id"] not in stored and orphan["id"] + ".thumb" not in stored
    assert {kept["id"], kept["id"] + ".thumb"} <= stored and Upload.get_or_none(Upload.id == kept["id"]) is not None
    assert (await link(api, bob, kept["id"]))["url"]
    # an orphan younger than --orphan-upload-ttl is kept
    fresh = await upload(api, alice, b"fresh", "fresh.txt")
    assert await services.uploads.sweep() == 0
    assert Upload.get_or_none(Upload.id == fresh["id"]) is not None


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


BIG = 200 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.mark.slow
@pytest.mark.same_in_both_runs  # its own SQLite server process: the PostgreSQL run would repeat it
@pytest.mark.gen_test(timeout=180)
async def test_200_mib_upload_keeps_memory_flat_and_messages_flowing(server_factory, tmp_path):
    from tests.support.clients import ApiClient, WSClient
    server = server_factory("--database-url", f"sqlite:///{tmp_path}/big.db", "--upload-dir", str(tmp_path / "up"),
                            "--max-upload-bytes", str(BIG), "--upload-quota-bytes", str(2 * BIG),
                            "--rate-limit-per-second", "10000", "--rate-limit-burst", "10000")
    api = ApiClient(server.url)
    alice, carol, dave = [await api.register(f"{n}_{os.urandom(3).hex()}") for n in ("alice", "carol", "dave")]
    chat = await chat_of(api, carol, dave)
    carol_ws = await WSClient.connect(server.ws_url, "/ws/chat", carol["token"])
    dave_ws = await WSClient.connect(server.ws_url, "/ws/chat", dave["token"])
    try:
        # warm up what a first upload and a first message load (Pillow, code paths), then measure
        await upload(api, alice, image_bytes("PNG"), "warm.png")
        for i in range(5):
            await carol_ws.request({"type": "send_message", "chat_id": chat, "content": f"warm {i}"}, "message_ack")
            await dave_ws.recv_type("message")
        baseline = rss_bytes(server.proc.pid)
        samples = []
        uploading = True

        async def sample():
            while uploading:
                samples.append(rss_bytes(server.proc.pid))
                await asyncio.sleep(0.05)

        block = b"%PDF-1.7\n" + b"\0" * (CHUNK - 9)
        rest = b"\0" * CHUNK

        async def producer(write):
            await write(block)
            for _ in range(BIG // CHUNK - 1):
                await write(rest)

        client = tornado.httpclient.AsyncHTTPClient()
        upload_done = asyncio.ensure_future(client.fetch(
            server.url + "/api/uploads?filename=big.pdf", method="POST", body_producer=producer,
            headers={**OCTET, "Authorization": f"Bearer {alice['token']}", "Content-Length": str(BIG)},
            raise_error=False, request_timeout=150))
        sampler = asyncio.ensure_future(sample())
        delivered_during = 0
        n = 0
        while not upload_done.done():  # another user's messages keep flowing meanwhile
            n += 1
            ack = await carol_ws.request({"type": "send_message", "chat_id": chat, "content": f"during {n}"},
                                         "message_ack", "error")
            assert ack["type"] == "message_ack", ack
            got = await dave_ws.recv_type("message")
            assert got["message"]["content"] == f"during {n}"
            if not upload_done.done():
                delivered_during += 1
        resp = await upload_done
        uploading = False
        await sampler
    finally:
        carol_ws.close()
        dave_ws.close()
    assert resp.code == 201, resp.body
    body = json.loads(resp.body)
    assert body["size"] == BIG and body["content_type"] == "application/pdf"
    assert os.path.getsize(os.path.join(tmp_path, "up", "files", body["id"][:2], body["id"])) == BIG
    assert delivered_during >= 3, delivered_during
    growth = max(samples) - baseline
    assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 1048576:.1f} MiB while receiving {BIG >> 20} MiB"
