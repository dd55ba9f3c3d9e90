"""The user directory: --user-search prefix|exact|off, the 2-character minimum, the per-user limit (issue 20, item 13)."""
import pytest

from tornado_app.config import Config, load_config
from tornado_app.services.identity.directory import MIN_PREFIX


def names(found) -> list:
    return [u["username"] for u in found["users"]]


@pytest.mark.gen_test(timeout=60)
async def test_prefix_mode_needs_two_characters(api, users):
    assert Config().user_search == "prefix" and MIN_PREFIX == 2
    alice, bob = await users("alice", "bob")
    for q in ("", "a", "+a+", "%20"):
        status, err = await api.call("GET", f"/api/users?q={q}", token=bob["token"])
        assert status == 400 and err["error"]["code"] == "query_too_short", (q, err)
    status, found = await api.call("GET", "/api/users?q=al", token=bob["token"])
    assert status == 200 and names(found) == [alice["username"]]
    status, found = await api.call("GET", "/api/users?q=Al", token=bob["token"])  # the display name, any case
    assert status == 200 and names(found) == [alice["username"]]
    status, found = await api.call("GET", "/api/users?q=al", token=alice["token"])  # never the caller
    assert status == 200 and names(found) == []
    status, err = await api.call("GET", "/api/users?q=" + "a" * 65, token=bob["token"])
    assert status == 400 and err["error"]["code"] == "invalid_query"
    for q in ("a%0bl", "al%7fx", "al%0ax"):  # control characters (Tornado already blanks NUL and most others)
        status, err = await api.call("GET", "/api/users?q=" + q, token=bob["token"])
        assert status == 400 and err["error"]["code"] == "invalid_query", q


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"user_search": "exact"}])
async def test_exact_mode_finds_a_whole_username_only(api, users):
    alice, bob = await users("alice", "bob")
    status, found = await api.call("GET", "/api/users?q=" + alice["username"], token=bob["token"])
    assert status == 200 and names(found) == [alice["username"]]
    status, found = await api.call("GET", "/api/users?q=" + alice["username"].upper(), token=bob["token"])
    assert status == 200 and names(found) == [alice["username"]]  # matched as logins are
    for q in (alice["username"][:-1], "al", "Alice", alice["username"] + "x"):  # prefixes, display names
        status, found = await api.call("GET", "/api/users?q=" + q, token=bob["token"])
        assert status == 200 and names(found) == [], q
    status, err = await api.call("GET", "/api/users?q=", token=bob["token"])
    assert status == 400 and err["error"]["code"] == "query_too_short"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("config_overrides", [{"user_search": "off"}])
async def test_off_mode_refuses_every_search(api, users):
    alice, bob = await users("alice", "bob")
    for q in ("", "al", alice["username"]):
        status, err = await api.call("GET", "/api/users?q=" + q, token=bob["token"])
        assert status == 403 and err["error"]["code"] == "user_search_disabled", (q, err)
    status, err = await api.call("GET", "/api/users?q=al")  # the token is still checked first
    assert status == 401


@pytest.mark.gen_test(timeout=60)
async def test_searches_are_limited_per_user_at_the_default(api, users):
    per_minute = Config().user_searches_per_minute
    assert per_minute == 30
    alice, bob, carol = await users("alice", "bob", "carol")
    for i in range(per_minute):
        status, found = await api.call("GET", "/api/users?q=al", token=bob["token"])
        assert status == 200 and names(found) == [alice["username"]], (i, found)
    status, err = await api.call("GET", "/api/users?q=al", token=bob["token"])
    assert status == 429 and err["error"]["code"] == "rate_limited"
    assert 1 <= int(api.last_headers["Retry-After"]) <= 2 and err["error"]["retry_after"] >= 1
    status, err = await api.call("GET", "/api/users?q=a", token=bob["token"])  # refused before the limit
    assert status == 400 and err["error"]["code"] == "query_too_short"
    status, found = await api.call("GET", "/api/users?q=al", token=carol["token"])  # another user: unaffected
    assert status == 200 and names(found) == [alice["username"]]


def test_the_flags_and_their_checks():
    _, config = load_config(["--user-search", "exact", "--user-searches-per-minute", "5"], environ={})
    assert config.user_search == "exact" and config.user_searches_per_minute == 5
    _, config = load_config([], environ={"USER_SEARCH": "off"})
    assert config.user_search == "off"
    for argv in (["--user-search", "everything"], ["--user-searches-per-minute", "0"]):
        with pytest.raises(SystemExit):
            load_config(argv, environ={})
