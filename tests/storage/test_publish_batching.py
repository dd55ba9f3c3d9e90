"""Group commit of the publish API (``PublishWriter``): concurrent publishes share transactions,
each request gets its own ids in order, and a request naming an unknown user fails alone."""
import asyncio
import datetime

import pytest

from tests.conftest import SERVICE_TOKEN
from tornado_app.services.delivery.publisher import MAX_ROWS, rows_of


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_publishes_share_commits_and_fail_alone(api, users, ws_connect, services):
    people = await users(*[f"p{i}" for i in range(20)])
    streams = {p["id"]: await ws_connect("/ws/notifications", p["token"]) for p in people}
    for ws in streams.values():
        await ws.recv_type("unread")
    before = services.notifications.publisher.transactions

    async def publish(body):
        return await api.call("POST", "/api/notifications", body, token=SERVICE_TOKEN)

    bodies = [{"user_ids": [p["id"]], "message": f"to {p['id']}", "data": {"n": i}} for i, p in enumerate(people)]
    bodies.append({"user_ids": [people[0]["id"], 10 ** 15], "message": "one unknown"})  # fails alone
    bodies.append({"user_ids": [p["id"] for p in people], "message": "to all twenty"})
    answers = await asyncio.gather(*(publish(b) for b in bodies))
    assert services.notifications.publisher.transactions - before < len(bodies)
    for status, body in answers[:20]:
        assert status == 202 and len(body["ids"]) == 1, body
    status, body = answers[20]
    assert status == 404 and body["error"]["code"] == "user_not_found", body
    status, many = answers[21]
    assert status == 202 and len(many["ids"]) == 20 and many["ids"] == sorted(many["ids"]), many
    # Each user gets exactly its own: the single one and its share of the batch, nothing of the unknown one.
    for i, p in enumerate(people):
        got = [(await streams[p["id"]].recv_type("announcement")) for _ in range(2)]
        assert sorted(g["id"] for g in got) == sorted([answers[i][1]["ids"][0], many["ids"][i]]), got
        assert {g["message"] for g in got} == {f"to {p['id']}", "to all twenty"}
    status, history = await api.call("GET", "/api/notifications", token=people[0]["token"])
    assert [n["message"] for n in history["notifications"]].count("one unknown") == 0


def test_a_transaction_holds_at_most_max_rows_unless_one_request_is_larger():
    assert rows_of(([1, 2, 3], "t", "{}", None, None, None)) == 3
    assert rows_of(([1, 2, 3], "t", "{}", None, [1], None)) == 1  # two muted the type
    assert rows_of((None, "t", "{}", None, None, [5, 6])) == 1  # a broadcast is one row
    assert rows_of(([1, 2], "t", "{}", None, [], None)) == 1  # everyone muted: still one request


@pytest.mark.gen_test(timeout=60)
async def test_publishes_past_max_rows_are_stored_in_several_transactions(users, services):
    people = [p["id"] for p in await users("a", "b", "c")]
    writer = services.notifications.publisher
    per_publish = len(people)
    count = MAX_ROWS // per_publish + 10  # submitted in one turn: more rows than one transaction holds
    before = writer.transactions
    now = datetime.datetime.utcnow()
    results = await asyncio.gather(*(writer.store(people, "t", f'{{"n":{i}}}', now) for i in range(count)))
    used = writer.transactions - before
    assert used == -(-count * per_publish // (MAX_ROWS // per_publish * per_publish)), used  # full ones, then the rest
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == count * per_publish
