"""A well-signed token whose account does not exist (e.g. the database was replaced) is refused."""
import pytest
import tornado.httpclient
import tornado.websocket

from tests.support.clients import SSEClient


@pytest.mark.gen_test(timeout=60)
async def test_token_of_a_missing_account_gets_401_everywhere(api, services, http_port, users):
    (alice,) = await users("alice")
    token, _ = services.auth.issue_access(alice["id"] + 1000, "0" * 32, 1)
    for method, path, body in (("GET", "/api/me", None), ("GET", "/api/chats", None),
                               ("POST", "/api/chats", {"user_id": alice["id"]})):
        status, data = await api.call(method, path, body, token=token)
        assert (status, data["error"]["code"]) == (401, "unknown_user"), path
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{http_port}/ws/notifications?access_token={token}")
    assert refused.value.code == 401
    sse = await SSEClient.connect("127.0.0.1", http_port, "/sse/chat", token)
    assert sse.status == 401 and '"unknown_user"' in await sse.body_text()
    # the real account's token still works
    status, me = await api.call("GET", "/api/me", token=alice["token"])
    assert status == 200 and me["id"] == alice["id"]
