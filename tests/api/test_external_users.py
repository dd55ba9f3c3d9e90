"""External users are provisioned by their product's id (issue 22, item 2): one row per id, even
under concurrent first requests; profile fields checked whole; builtin login refuses them.

Run with TEST_DATABASE_URL=postgresql://… for the PostgreSQL half (the unique index decides
the race there too).
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from models import User
from tornado_app.errors import NotFound, ValidationError
from tornado_app.services.identity.users import MAX_AVATAR_URL, MAX_EXTERNAL_ID, check_avatar_url, check_external_id


def ext() -> str:
    return "ext-" + uuid.uuid4().hex


@pytest.mark.gen_test(timeout=60)
async def test_first_use_creates_and_later_calls_update(services):
    users = services.users
    eid = ext()
    user, changed = await users.upsert_external(eid, display_name="Ada", avatar_url="https://cdn.example/a.png")
    assert changed and user["display_name"] == "Ada" and user["username"].startswith("~")
    again, changed = await users.upsert_external(eid, display_name="Ada")
    assert (again["id"], changed) == (user["id"], False)
    renamed, changed = await users.upsert_external(eid, display_name="Ada L.", avatar_url="https://cdn.example/b.png")
    assert changed and renamed["id"] == user["id"] and renamed["display_name"] == "Ada L."
    row = await services.dbx.read(lambda: User.get_by_id(user["id"]))
    assert (row.kind, row.external_id, row.avatar_url, row.password_hash) == ("external", eid,
                                                                          "https://cdn.example/b.png", "")
    _, changed = await users.upsert_external(eid, clear_avatar=True)
    row = await services.dbx.read(lambda: User.get_by_id(user["id"]))
    assert changed and row.avatar_url is None


@pytest.mark.gen_test(timeout=60)
async def test_no_name_falls_back_to_the_id_cut_to_64(services):
    eid = "x" * MAX_EXTERNAL_ID
    user, _ = await services.users.upsert_external(eid)
    assert user["display_name"] == "x" * 64


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_first_requests_create_one_user(services):
    eid = ext()
    results = await asyncio.gather(*(services.users.upsert_external(eid, display_name="Bo") for _ in range(8)))
    assert len({user["id"] for user, _ in results}) == 1
    assert await services.dbx.read(lambda: User.select().where(User.external_id == eid).count()) == 1


@pytest.mark.gen_test(timeout=60)
async def test_a_deleted_user_is_not_revived(services):
    eid = ext()
    user, _ = await services.users.upsert_external(eid)
    await services.dbx.write(lambda: User.update(kind="deleted").where(User.id == user["id"]).execute())
    with pytest.raises(NotFound) as caught:
        await services.users.upsert_external(eid, display_name="Back")
    assert caught.value.code == "user_deleted"


def test_external_ids_at_and_past_their_limits():
    assert check_external_id("a") == "a"
    assert check_external_id("é" * MAX_EXTERNAL_ID) == "é" * MAX_EXTERNAL_ID
    for bad in ("", "a" * (MAX_EXTERNAL_ID + 1), "a\nb", "\u202eab", 42, None, ["a"]):
        with pytest.raises(ValidationError) as caught:
            check_external_id(bad)
        assert caught.value.code == "invalid_external_id", repr(bad)


def test_avatar_urls_are_parsed_as_browsers_will():
    ok = "https://cdn.example/" + "a" * (MAX_AVATAR_URL - len("https://cdn.example/"))
    assert check_avatar_url(ok) == ok and check_avatar_url(None) is None
    assert check_avatar_url("http://127.0.0.1:8080/a.png") == "http://127.0.0.1:8080/a.png"
    for bad in (ok + "a", "", "javascript:alert(1)", "data:image/png;base64,AAAA", "//cdn.example/a.png",
                "https://user:pw@cdn.example/a.png", "https://cdn.example/a b.png", "https://cdn.example:99999/",
                "https:///a.png", "https://cdn.example/\na", 7):
        with pytest.raises(ValidationError) as caught:
            check_avatar_url(bad)
        assert caught.value.code == "invalid_avatar_url", repr(bad)


@pytest.mark.gen_test(timeout=60)
async def test_builtin_login_refuses_an_external_user(services, api):
    user, _ = await services.users.upsert_external(ext())
    for password in ("", "password123"):
        status, err = await api.call("POST", "/api/auth/login", {"username": user["username"], "password": password})
        assert status in (400, 401), err
        assert err["error"]["code"] in ("invalid_credentials", "validation_error")


@pytest.mark.gen_test(timeout=60)
async def test_the_directory_never_lists_system_or_deleted_users(services, api):
    status, me = await api.call("POST", "/api/auth/register", {"username": "dir" + uuid.uuid4().hex[:8],
                                                               "password": "password123"})
    assert status == 201, me
    token = me["access_token"]
    tag = uuid.uuid4().hex[:10]
    kept, _ = await services.users.upsert_external(ext(), display_name=f"Zz{tag} kept")
    gone, _ = await services.users.upsert_external(ext(), display_name=f"Zz{tag} gone")
    system, _ = await services.users.upsert_external(ext(), display_name=f"Zz{tag} system")
    await services.dbx.write(lambda: User.update(kind="deleted").where(User.id == gone["id"]).execute())
    await services.dbx.write(lambda: User.update(kind="system").where(User.id == system["id"]).execute())
    status, found = await api.call("GET", f"/api/users?q=Zz{tag}", token=token)
    assert status == 200, found
    assert [u["id"] for u in found["users"]] == [kept["id"]]
