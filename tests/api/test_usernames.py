"""Usernames and display names are checked whole before any database sees them (issue 20, item 3).

``alice\\n`` used to register (the pattern ended in ``$``, which matches before a final
newline) and on PostgreSQL 32 characters plus a newline was a 500 ``DataError``. Run with
TEST_DATABASE_URL=postgresql://… for the PostgreSQL half of the acceptance.
"""
from __future__ import annotations

import uuid

import pytest

PASSWORD = "password123"


def unique(length: int) -> str:
    """A fresh username of exactly ``length`` characters (3 to 32)."""
    return ("u" + uuid.uuid4().hex)[:length]


async def register(api, username, display_name=None):
    body = {"username": username, "password": PASSWORD}
    if display_name is not None:
        body["display_name"] = display_name
    return await api.call("POST", "/api/auth/register", body)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\r", "\t", "\x0b", "\x1b", "\x7f", "\x85",
                                    "\u200b", "\u200e", "\u202e", "\u2028", "\ufeff"])
async def test_control_characters_in_usernames_are_refused(api, suffix):
    name = unique(10)
    for candidate in (name + suffix, suffix + name, name[:5] + suffix + name[5:]):
        status, err = await register(api, candidate)
        assert (status, err["error"]["code"]) == (400, "invalid_username"), (repr(candidate), err)
        assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}
    # nothing was stored: the clean name is still free
    status, data = await register(api, name)
    assert status == 201, data


@pytest.mark.gen_test(timeout=60)
async def test_alice_newline_is_400_and_alice_stays_free(api):
    name = "alice"
    status, err = await register(api, name + "\n")
    assert (status, err["error"]["code"]) == (400, "invalid_username"), err
    status, data = await register(api, name)
    assert status == 201 and data["user"]["username"] == name, data


@pytest.mark.gen_test(timeout=60)
async def test_username_lengths_at_and_past_the_limits(api):
    for length in (3, 32):  # at the limits
        name = unique(length)
        status, data = await register(api, name)
        assert status == 201 and data["user"]["username"] == name, (length, data)
    too_long = unique(32)
    for candidate in (unique(2), unique(32) + "x", too_long + "\n", "x" * 300, "x" * 60000):
        status, err = await register(api, candidate)
        assert (status, err["error"]["code"]) == (400, "invalid_username"), (len(candidate), err)
    # NFKC can lengthen a name ("ﬀ" is "ff"): the limit applies to the stored form
    status, data = await register(api, "\ufb00" * 16)
    assert status == 201 and data["user"]["username"] == "ff" * 16, data
    status, err = await register(api, "\ufb00" * 16 + "g")
    assert (status, err["error"]["code"]) == (400, "invalid_username"), err
    status, err = await register(api, "\ufdfa")  # one character, 18 after NFKC, none of them allowed
    assert (status, err["error"]["code"]) == (400, "invalid_username"), err


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("display_name", ["Alice\n", "\nAlice", "Al\tice", "Al\rice", "\x1b[31mAlice",
                                          "Alice\x7f", "Alice\x85", "A\u202eecila", "A\u2066lice",
                                          "Al\u200bice", "Alice\u2028", "Alice\u2029", "\ufeffAlice",
                                          "Alice\U000e0001"])
async def test_control_characters_in_display_names_are_refused(api, display_name):
    status, err = await register(api, unique(10), display_name)
    assert (status, err["error"]["code"]) == (400, "invalid_display_name"), (repr(display_name), err)
    assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}


@pytest.mark.gen_test(timeout=60)
async def test_display_name_lengths_at_and_past_the_limit(api):
    for display_name in ("d" * 64, "\U0001f600" * 64, "  " + "e" * 64 + "  "):  # 64 characters after strip
        status, data = await register(api, unique(10), display_name)
        assert status == 201 and data["user"]["display_name"] == display_name.strip(), data
    for display_name in ("d" * 65, "\U0001f600" * 65, "d" * 60000):
        status, err = await register(api, unique(10), display_name)
        assert (status, err["error"]["code"]) == (400, "invalid_display_name"), (len(display_name), err)


@pytest.mark.gen_test(timeout=60)
async def test_display_names_keep_joined_emoji_and_scripts(api):
    # ZWJ (emoji sequences) and ZWNJ (Persian) are format characters that text needs
    for display_name in ("Family \U0001f468\u200d\U0001f469\u200d\U0001f467",
                         "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645", "Zoë Ångström", "\u5c0f\u660e"):
        status, data = await register(api, unique(10), display_name)
        assert status == 201 and data["user"]["display_name"] == display_name, data
