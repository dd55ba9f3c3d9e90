"""The security review of the service API (issue 22): each defect it found, shown fixed.

1. a deleted user's token does not re-create the account (401 ``account_deleted``);
2. a ``client_id`` already used in another chat is 409 ``client_id_conflict``;
3. chat creation and growth check limits and conflicts before provisioning anyone;
4. wrong service tokens are rate-limited per address; a short SERVICE_TOKEN is warned about.
"""
from __future__ import annotations

import time

import pytest
import tornado.httpclient

from models import Message, User
from tests.api.test_service_api import PRODUCT, closed, ext, group, path_of, product_token, put_user, svc
from tests.conftest import SERVICE_TOKEN
from tornado_app.config import Config
from tornado_app.services.identity.users import tombstone
from tornado_app.startup import service_token_warning


async def user_count(services) -> int:
    return await services.dbx.read(lambda: User.select().count())


# 1. Deleted users stay deleted for their old tokens ---------------------------------------------


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_a_deleted_users_token_is_refused_and_a_later_one_is_a_new_user(api, services, ws_connect):
    eid = ext("pat")
    old = product_token(eid, int(time.time()) - 5)
    status, me = await api.call("GET", "/api/me", token=old)  # provisioned just in time
    assert status == 200
    first_id = me["id"]
    ws = await ws_connect("/ws/chat", old)
    await ws.request({"type": "ping"}, "pong")
    status, out = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200 and out["id"] == first_id
    assert await closed(ws) == (4001, "account_deleted")
    deleted_at = int(time.time())
    # the page reconnects with the same token: refused, and no user is created
    before = await user_count(services)
    for _ in range(2):
        status, out = await api.call("GET", "/api/me", token=old)
        assert status == 401 and out["error"]["code"] == "account_deleted", out
        status, out = await api.call("GET", "/api/chats", token=old)
        assert status == 401 and out["error"]["code"] == "account_deleted", out
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:  # the WebSocket upgrade too
        await ws_connect("/ws/chat", old)
    assert refused.value.code == 401
    assert await user_count(services) == before
    row = await services.dbx.read(User.get_by_id, first_id)
    assert row.external_id == tombstone(eid) and row.external_id.startswith("\x01")
    assert row.revoked_at is not None and row.revoked_at <= deleted_at
    # a token minted at the second of the deletion is still refused (at or before)
    status, out = await api.call("GET", "/api/me", token=product_token(eid, row.revoked_at))
    assert status == 401 and out["error"]["code"] == "account_deleted"
    # a token minted after the deletion: a new, empty user
    fresh = product_token(eid, row.revoked_at + 1)
    status, me2 = await api.call("GET", "/api/me", token=fresh)
    assert status == 200 and me2["id"] != first_id and me2["display_name"] == "Pat"
    status, view = await svc(api, "GET", f"/api/service/users/{path_of(eid)}/chats")
    assert status == 200 and view["chats"] == [] and view["unread_total"] == 0
    # the old token never reaches the new account (refused as revoked by the deletion)
    status, out = await api.call("GET", "/api/me", token=old)
    assert status == 401 and out["error"]["code"] in ("account_deleted", "token_revoked"), out


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_a_token_without_iat_of_a_deleted_user_is_refused(api, services):
    import jwt
    eid = ext("noiat")
    claims = {"sub": eid, "iss": PRODUCT["external_jwt_issuer"], "aud": PRODUCT["external_jwt_audience"],
              "exp": int(time.time()) + 600}
    token = jwt.encode(claims, PRODUCT["external_jwt_secret"], algorithm="HS256")
    status, _ = await api.call("GET", "/api/me", token=token)
    assert status == 200
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    status, out = await api.call("GET", "/api/me", token=token)
    assert status == 401 and out["error"]["code"] == "account_deleted"


@pytest.mark.parametrize("config_overrides", [PRODUCT])
@pytest.mark.gen_test(timeout=60)
async def test_put_after_delete_creates_a_new_user_and_a_second_delete_keeps_one_tombstone(api, services):
    eid = ext("ann")
    first = await put_user(api, eid, display_name="Ann")
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    status, out = await svc(api, "PUT", f"/api/service/users/{path_of(eid)}", {})
    assert status == 201 and out["user"]["id"] != first["id"] and out["user"]["external_id"] == eid
    second = out["user"]
    status, _ = await svc(api, "DELETE", f"/api/service/users/{path_of(eid)}")
    assert status == 200
    rows = await services.dbx.read(lambda: {u.id: u.external_id for u in User.select().where(
        User.id.in_([first["id"], second["id"]]))})
    assert rows == {first["id"]: None, second["id"]: tombstone(eid)}
    # the old token of the re-created user (minted before its deletion) is refused too
    status, out = await api.call("GET", "/api/me", token=product_token(eid, int(time.time()) - 5))
    assert status == 401 and out["error"]["code"] == "account_deleted"


# 2. client_id in another chat ---------------------------------------------------------------------


@pytest.mark.parametrize("sender", [None, "member"])
@pytest.mark.gen_test(timeout=60)
async def test_a_client_id_used_in_another_chat_is_a_conflict(api, services, sender):
    a, b = ext("a"), ext("b")
    c1, c2 = await group(api, ext("k"), [a, b]), await group(api, ext("k"), [a, b])
    extra = {} if sender is None else {"sender": a}
    status, m1 = await svc(api, "POST", f"/api/service/chats/{c1['id']}/messages",
                           {"content": "secret A", "client_id": "welcome", **extra})
    assert status == 201
    status, again = await svc(api, "POST", f"/api/service/chats/{c1['id']}/messages",
                              {"content": "secret A", "client_id": "welcome", **extra})
    assert status == 200 and again["message"]["id"] == m1["message"]["id"]  # idempotent in its own chat
    status, out = await svc(api, "POST", f"/api/service/chats/{c2['id']}/messages",
                            {"content": "hello B", "client_id": "welcome", **extra})
    assert status == 409 and out == {"error": {"code": "client_id_conflict", "message": out["error"]["message"]}}
    assert "secret" not in out["error"]["message"]
    count = await services.dbx.read(lambda: Message.select().where(Message.chat == c2["id"]).count())
    assert count == 0


# 3. Checks before provisioning --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_create_chat_counts_repeated_members_once(api, config):
    members = [ext(f"m{i}") for i in range(config.max_group_members)]
    status, out = await svc(api, "POST", "/api/service/chats",
                            {"kind": "group", "key": ext("k"), "title": "T", "members": members + members[:5]})
    assert status == 201 and len(out["chat"]["members"]) == config.max_group_members


@pytest.mark.gen_test(timeout=60)
async def test_refused_chat_changes_create_no_users(api, services, config):
    a, b = ext("a"), ext("b")
    key = ext("k")
    await group(api, key, [a, b])
    before = await user_count(services)
    status, out = await svc(api, "POST", "/api/service/chats",
                            {"kind": "group", "key": key, "title": "T", "members": [a, ext("new")]})
    assert status == 409 and out["error"]["code"] == "chat_key_conflict"
    status, private = await svc(api, "POST", "/api/service/chats", {"kind": "private", "members": [a, b]})
    assert status in (200, 201)
    assert await user_count(services) == before
    status, out = await svc(api, "POST", f"/api/service/chats/{private['chat']['id']}/members",
                            {"external_ids": [ext("new")]})
    assert status == 409 and out["error"]["code"] == "not_a_group"
    big = await group(api, ext("k"), [ext(f"m{i}") for i in range(config.max_group_members)])
    before = await user_count(services)
    status, out = await svc(api, "POST", f"/api/service/chats/{big['id']}/members",
                            {"external_ids": [ext("new"), ext("new")]})
    assert status == 400 and out["error"]["code"] == "too_many_members"
    assert await user_count(services) == before
    # a member already in counts nothing: the full group accepts them again
    status, out = await svc(api, "POST", f"/api/service/chats/{big['id']}/members",
                            {"external_ids": [big["members"][0]["external_id"]]})
    assert status == 200 and out["added"] == []


# 4. Guessing the service token --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_wrong_service_tokens_are_limited_per_address(api, config):
    limit = config.service_token_failures_per_address_per_minute
    assert limit == Config().service_token_failures_per_address_per_minute == 10  # the documented default
    for i in range(limit):
        status, out = await svc(api, "GET", f"/api/service/users/{ext('u')}/chats", token=f"guess-{i}")
        assert status == 403 and out["error"]["code"] == "invalid_service_token", (i, out)
    status, out = await svc(api, "GET", f"/api/service/users/{ext('u')}/chats", token="guess-again")
    assert status == 429 and out["error"]["code"] == "rate_limited"
    assert set(out) == {"error"} and set(out["error"]) >= {"code", "message"}
    assert 1 <= int(api.last_headers["Retry-After"]) <= 60
    # while limited, even the right token waits (a guess that hits is not told apart)
    status, out = await svc(api, "POST", "/api/notifications", {"broadcast": True, "message": "x"})
    assert status == 429


@pytest.mark.gen_test(timeout=60)
async def test_the_right_service_token_costs_nothing(api):
    for _ in range(15):
        status, _ = await svc(api, "PUT", f"/api/service/users/{ext('u')}", {}, token=SERVICE_TOKEN)
        assert status == 201


def test_a_short_service_token_is_warned_about_not_refused():
    assert "32" in service_token_warning(Config(service_token="s" * 31))
    assert service_token_warning(Config(service_token="s" * 32)) is None
    assert service_token_warning(Config(service_token="")) is None
