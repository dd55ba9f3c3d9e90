"""No log line, at any level, holds a token, a password or its hash, message content or a
notification payload: every error path of issue 9 plus forced internal errors, at debug level
with SQL logging on, and the whole log grepped."""
import asyncio
import sqlite3
import uuid

import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import ApiClient, SSEClient, WSClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import start_server

PASSWORD = "Pw-" + uuid.uuid4().hex
CONTENT = "CONTENT-" + uuid.uuid4().hex
PAYLOAD = "PAYLOAD-" + uuid.uuid4().hex
BIG = "99999999999999999999"


@pytest.mark.gen_test(timeout=120)
async def test_no_secret_or_content_in_the_debug_log(tmp_path):
    db_path = tmp_path / "scrub.db"
    server = start_server(tmp_path, "--log-level", "debug", "--log-sql", DATABASE_URL=f"sqlite:///{db_path}")
    try:
        api = ApiClient(server.url)
        alice = await api.register("alice_scrub", PASSWORD)
        bob = await api.register("bob_scrub", PASSWORD)
        token = alice["token"]
        status, _ = await api.call("POST", "/api/auth/login", {"username": "alice_scrub", "password": PASSWORD + "x"})
        assert status == 401
        status, login = await api.call("POST", "/api/auth/login", {"username": "alice_scrub", "password": PASSWORD})
        assert status == 200
        tokens = {token, bob["token"], login["access_token"], SERVICE_TOKEN}
        status, data = await api.call("POST", "/api/chats", {"user_id": bob["id"]}, token=token)
        chat_id = data["chat"]["id"]
        status, _ = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": CONTENT + "-http"},
                                   token=token)
        assert status == 201
        status, _ = await api.call("POST", "/api/notifications", {"user_ids": [bob["id"]], "message": PAYLOAD,
                                                                  "data": {"p": PAYLOAD}}, token=SERVICE_TOKEN)
        assert status == 202

        # the error paths of the issue, tokens in the query, the header and the cookie
        for path in (f"/api/notifications?before_id={BIG}&access_token={token}",
                     f"/api/chats/{chat_id}/messages?before_id={BIG}&access_token={token}",
                     f"/api/chats?limit=0&access_token={token}", f"/api/nowhere?access_token={token}"):
            status, _ = await api.call("GET", path)
            assert status in (400, 404)
        status, _ = await api.call("GET", f"/api/notifications?before_id={BIG}",
                                   headers={"Cookie": f"squall_token={token}"})
        assert status == 400
        for body in ({"ids": [10 ** 30]}, {"ids": CONTENT}):
            for path in ("/api/notifications/read", "/api/notifications/clear"):
                status, _ = await api.call("POST", path, body, token=token)
                assert status == 400
        status, _ = await api.call("POST", "/api/notifications", {"user_ids": [10 ** 30], "message": PAYLOAD},
                                   token=SERVICE_TOKEN)
        assert status == 400
        status, _ = await api.call("POST", f"/api/chats/{chat_id}/messages", raw=("x" * 70000 + CONTENT).encode(),
                                   token=token)
        assert status == 413
        status, _ = await api.call("POST", f"/api/chats/{chat_id}/messages", raw=("{" + CONTENT).encode(), token=token)
        assert status == 400
        for path in ("/ws/chat", "/ws/notifications"):
            with pytest.raises(tornado.httpclient.HTTPClientError):
                await tornado.websocket.websocket_connect(f"{server.ws_url}{path}?access_token={token}"
                                                          f"&last_event_id={BIG}")
            with pytest.raises(tornado.httpclient.HTTPClientError):
                await tornado.websocket.websocket_connect(f"{server.ws_url}{path}?access_token={token}x")
        for path in ("/sse/chat", "/sse/notifications"):
            sse = await SSEClient.connect("127.0.0.1", server.port, path, token, last_event_id=BIG)
            assert sse.status == 400
            sse.close()
        ws = await WSClient.connect(server.ws_url, "/ws/chat", token)
        for frame in ({"content": CONTENT, "client_id": "c"}, {"type": "send_message", "chat_id": 10 ** 30,
                                                               "content": CONTENT},
                      {"type": "send_message", "chat_id": chat_id, "content": CONTENT + "\u0000"},
                      {"type": "send_message", "chat_id": chat_id, "content": CONTENT * 200}):
            assert (await ws.request(frame, "error"))["type"] == "error"
        # malformed HTTP carrying a token: Tornado's complaint must not quote it
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /api/me HTTP/1.1\r\nAuthorization: Bearer {token}\r\nno colon {CONTENT}\r\n\r\n".encode())
        await asyncio.wait_for(reader.read(), 10)
        writer.close()

        # forced internal errors whose exception messages quote content and payloads (SQLite's
        # RAISE takes a literal: the secrets are written into the triggers)
        with sqlite3.connect(db_path) as conn:
            conn.execute("CREATE TRIGGER boom_m BEFORE INSERT ON message BEGIN "
                         f"SELECT RAISE(ABORT, 'refused: {CONTENT}'); END")
            conn.execute("CREATE TRIGGER boom_n BEFORE INSERT ON notification WHEN NEW.type = 'test' BEGIN "
                         f"SELECT RAISE(ABORT, 'refused: {PAYLOAD}'); END")
        status, body = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": CONTENT + "-boom"},
                                      token=token)
        assert status in (404, 500, 503), body  # never acknowledged: it was not stored
        ack = await ws.request({"type": "send_message", "chat_id": chat_id, "content": CONTENT + "-ws"}, "error")
        assert ack["code"] in ("store_failed", "internal_error", "database_unavailable")
        status, body = await api.call("POST", "/api/notifications/test", {}, token=token)
        assert status == 500 and body["error"]["code"] == "internal_error"
        ws.close()

        with sqlite3.connect(db_path) as conn:
            hashes = [h for (h,) in conn.execute('SELECT password_hash FROM "user"')]
        await asyncio.sleep(0.2)
        log = server.log()
        assert "SQL: " in log and "DEBUG" in log  # the log really was at debug level, with statements
        assert "uncaught" in log and "<message withheld>" in log  # the forced errors were logged
        secrets = [*tokens, PASSWORD, *hashes, CONTENT, PAYLOAD]
        for secret in secrets:
            assert secret not in log, secret[:12]
        for h in hashes:  # not even the distinctive part of an argon2 hash
            assert h.split("$")[-1] not in log
    finally:
        server.kill()
