"""Message search, GET /api/search (issue 25, item 6): each database's own engine (FTS5 on
SQLite, tsvector on PostgreSQL; CI runs this module on both), only the caller's chats, ranked,
paged, highlighted, every limit at and past its bound, and the index kept in step by the
database when a message's content changes or the message goes."""
from urllib.parse import quote

import pytest

from tornado_app.config import Config
from tornado_app.services.chat.search import MAX_LIMIT, MAX_OFFSET, MAX_QUERY_CHARS, MAX_TERMS


async def chat_of(api, a, b):
    status, data = await api.call("POST", "/api/chats", {"user_id": b["id"]}, token=a["token"])
    assert status == 200, data
    return data["chat"]["id"]


async def send(api, user, chat_id, content):
    status, data = await api.call("POST", f"/api/chats/{chat_id}/messages", {"content": content},
                                  token=user["token"])
    assert status == 201, data
    return data["message"]["id"]


async def search(api, user, q, expect=200, **params):
    query = "&".join(f"{k}={quote(str(v))}" for k, v in {"q": q, **params}.items())
    status, data = await api.call("GET", "/api/search?" + query, token=user["token"])
    assert status == expect, (q, params, data)
    return data


def marked(result) -> list:
    return [s["text"] for s in result["highlight"] if s["match"]]


@pytest.mark.gen_test(timeout=60)
async def test_only_the_callers_chats_ranked_and_highlighted(api, users):
    alice, bob, carol, dave = await users("alice", "bob", "carol", "dave")
    ours = await chat_of(api, alice, bob)
    theirs = await chat_of(api, carol, dave)
    once = await send(api, alice, ours, "the deploy of friday went out late, with a long tail of other words")
    thrice = await send(api, bob, ours, "Deploy, deploy, DEPLOY!")
    await send(api, carol, theirs, "deploy deploy deploy deploy")  # never seen by alice or bob
    await send(api, alice, ours, "nothing to see here")

    for user in (alice, bob):
        found = await search(api, user, "deploy")
        assert [r["id"] for r in found["results"]] == [thrice, once]  # more occurrences rank first
        assert found["next_cursor"] is None
        best = found["results"][0]
        assert best["chat_id"] == ours and best["sender_id"] == bob["id"] and best["sender_name"] == "Bob"
        assert best["content"] == "Deploy, deploy, DEPLOY!"
        assert best["highlight"] == [{"text": "Deploy", "match": True}, {"text": ", ", "match": False},
                                     {"text": "deploy", "match": True}, {"text": ", ", "match": False},
                                     {"text": "DEPLOY", "match": True}, {"text": "!", "match": False}]
    found = await search(api, carol, "deploy")
    assert [r["chat_id"] for r in found["results"]] == [theirs]

    # every word must occur; the last one is a prefix (search as you type)
    assert [r["id"] for r in (await search(api, alice, "friday depl"))["results"]] == [once]
    assert marked((await search(api, alice, "friday depl"))["results"][0]) == ["deploy", "friday"]
    assert (await search(api, alice, "saturday deploy"))["results"] == []
    assert (await search(api, alice, "eploy"))["results"] == []  # words, not substrings
    # a one-letter last word is not a prefix: it matches whole words only
    assert (await search(api, alice, "deploy t"))["results"] == []
    # case-insensitive; accents kept on both engines
    assert len((await search(api, alice, "DePlOy"))["results"]) == 2
    cafe = await send(api, alice, ours, "un café noir")
    assert [r["id"] for r in (await search(api, alice, "café"))["results"]] == [cafe]
    assert [r["id"] for r in (await search(api, alice, "CAFÉ"))["results"]] == [cafe]
    assert (await search(api, alice, "cafe"))["results"] == []

    # restricted to one chat the caller is in; a chat of others is refused, as its history is
    in_chat = await search(api, alice, "deploy", chat_id=ours)
    assert [r["id"] for r in in_chat["results"]] == [thrice, once]
    status, err = await api.call("GET", f"/api/search?q=deploy&chat_id={theirs}", token=alice["token"])
    assert status == 403 and err["error"]["code"] == "not_a_member"
    status, err = await api.call("GET", "/api/search?q=deploy")
    assert status == 401


@pytest.mark.gen_test(timeout=60)
async def test_paging_every_result_once_and_the_bounds(api, users):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    sent = [await send(api, alice, chat, f"report number {i}") for i in range(23)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10} if cursor is None else {"limit": 10, "cursor": cursor}
        page = await search(api, bob, "report", **params)
        seen += [r["id"] for r in page["results"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted(sent) and len(seen) == len(set(seen))
    # equal ranks: newest first
    assert seen == sorted(sent, reverse=True)

    assert len((await search(api, bob, "report", limit=MAX_LIMIT))["results"]) == 23
    for limit in (0, MAX_LIMIT + 1):
        status, err = await api.call("GET", f"/api/search?q=report&limit={limit}", token=bob["token"])
        assert status == 400 and err["error"]["code"] == "validation_error", (limit, err)
    assert (await search(api, bob, "report", cursor=MAX_OFFSET))["results"] == []  # the deepest page start
    for cursor in (MAX_OFFSET + 1, "abc", "-1", "１", "1e3"):
        status, err = await api.call("GET", f"/api/search?q=report&cursor={quote(str(cursor))}", token=bob["token"])
        assert status == 400 and err["error"]["code"] == "invalid_cursor", (cursor, err)


@pytest.mark.gen_test(timeout=60)
async def test_hostile_queries_are_words_and_bad_ones_get_their_code(api, users):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    hit = await send(api, alice, chat, 'release NEAR the "gate" OR not')
    # engine syntax in the query is only words: no operator, no syntax error, no SQL
    for q in ('"gate', "gate*", "NEAR(gate release)", "gate OR zzz", "gate -release", "release:*",
              "gate') OR 1=1 --", "gate & !release", "not", "OR"):
        found = await search(api, bob, q)
        expected = [] if "zzz" in q or "1=1" in q else [hit]  # "1" is a word of no message
        assert [r["id"] for r in found["results"]] == expected, q
    for q, code in (("", "invalid_query"), ("   ", "invalid_query"), ("!!! ... ???", "invalid_query"),
                    ("__", "invalid_query"), ("x" * (MAX_QUERY_CHARS + 1), "query_too_long"),
                    (" ".join(["gate"] * (MAX_TERMS + 1)), "too_many_terms")):
        status, err = await api.call("GET", "/api/search?q=" + quote(q), token=bob["token"])
        assert status == 400 and err["error"]["code"] == code, (q, err)
    status, err = await api.call("GET", "/api/search", token=bob["token"])
    assert status == 400 and err["error"]["code"] == "invalid_query"
    # at the bounds: accepted
    assert (await search(api, bob, "g" * MAX_QUERY_CHARS))["results"] == []
    assert [r["id"] for r in (await search(api, bob, " ".join(["gate"] * MAX_TERMS)))["results"]] == [hit]


@pytest.mark.gen_test(timeout=60)
async def test_long_content_is_cut_around_the_first_match(api, users):
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    content = "lorem " * 100 + "needle in the middle " + "ipsum " * 100
    await send(api, alice, chat, content)
    found = (await search(api, bob, "needle"))["results"][0]
    text = "".join(s["text"] for s in found["highlight"])
    assert text.startswith("…") and text.endswith("…") and "needle in the middle" in text
    assert len(text) <= 202 and found["content"] == content
    assert marked(found) == ["needle"]


@pytest.mark.gen_test(timeout=60)
async def test_the_index_follows_edits_and_deletes_in_the_database(api, users, services):
    """Whatever writes a message's content (an edit, a delete that erases it) keeps the index right."""
    alice, bob = await users("alice", "bob")
    chat = await chat_of(api, alice, bob)
    first = await send(api, alice, chat, "the secret plan")
    second = await send(api, alice, chat, "another plan")
    db = services.db

    def write(sql, *params):  # on the writer thread, which holds its own connection
        db.execute_sql(sql.replace("?", db.param), params)

    await services.dbx.write(write, 'UPDATE "message" SET "content" = ? WHERE "id" = ?', "the public plan", first)
    assert (await search(api, bob, "secret"))["results"] == []
    assert [r["id"] for r in (await search(api, bob, "public"))["results"]] == [first]
    await services.dbx.write(write, 'UPDATE "message" SET "content" = ? WHERE "id" = ?', "", first)  # erased
    assert [r["id"] for r in (await search(api, bob, "plan"))["results"]] == [second]
    await services.dbx.write(write, 'DELETE FROM "message" WHERE "id" = ?', second)
    assert (await search(api, bob, "plan"))["results"] == []
    assert (await search(api, bob, "another"))["results"] == []


@pytest.mark.gen_test(timeout=60)
async def test_searches_are_limited_per_user_at_the_default(api, users):
    per_minute = Config().message_searches_per_minute
    assert per_minute == 30
    alice, bob = await users("alice", "bob")
    for _ in range(per_minute):
        await search(api, alice, "anything")
    status, err = await api.call("GET", "/api/search?q=anything", token=alice["token"])
    assert status == 429 and err["error"]["code"] == "rate_limited"
    await search(api, bob, "anything")  # another user's bucket is full
    # a refused query costs nothing: validation comes first
    status, err = await api.call("GET", "/api/search?q=", token=alice["token"])
    assert status == 400
