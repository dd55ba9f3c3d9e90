"""examples/flask_shop without a browser (issue 23, item 3): its own users and login, the Squall
tokens it mints (accepted by a real Squall in external mode), a support chat per order through
the service API, @squall/client served from its own origin, and its webhook route verifying
events signed with the standardwebhooks package, "emailing" ``notification.unseen`` through its
real SMTP server into the mailbox file, once per event id."""
from __future__ import annotations

import json
import re
import shlex
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import standardwebhooks

from tests.support.markdown import ROOT, fenced_blocks
from tests.support.procs import ServerProcess, free_port
from tests.support.shop import CLIENT_SRC, SHOP, STAFF, WEBHOOK_SECRET, ShopProcess, start_shop, start_squall_for_shop
from tornado_app.config import load_config

for folder in (str(SHOP), str(CLIENT_SRC)):  # the shop's module, and the squall_client it imports
    if folder not in sys.path:
        sys.path.insert(0, folder)
from shop import ShopConfig  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("shop")
    port = free_port()
    squall = start_squall_for_shop(tmp, port)
    shop = start_shop(tmp, port, squall.url)
    yield squall, shop
    shop.stop()
    squall.kill()


def sign_up(shop: ShopProcess, name: str) -> tuple[httpx.Client, str]:
    """A signed-in browser-like client of the shop (its session cookie) and the account's email."""
    email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@shop.test"
    client = httpx.Client(base_url=shop.url, follow_redirects=True)
    answer = client.post("/signup", data={"email": email, "name": name, "password": "a-good-password"})
    assert answer.status_code == 200 and name in answer.text, answer.text[-2000:]
    return client, email


def squall_token(client: httpx.Client) -> str:
    answer = client.post("/squall-token", json={})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.json()["token"]


def test_signed_in_users_get_squall_tokens_squall_accepts(stack: tuple[ServerProcess, ShopProcess]) -> None:
    squall, shop = stack
    client, email = sign_up(shop, "Alice")
    me = httpx.get(squall.url + "/api/me", headers={"Authorization": f"Bearer {squall_token(client)}"})
    assert me.status_code == 200 and me.json()["display_name"] == "Alice"

    stranger = httpx.Client(base_url=shop.url)
    assert stranger.post("/squall-token", json={}).status_code == 401
    assert stranger.get("/").headers["location"].endswith("/login")
    wrong = stranger.post("/login", data={"email": email, "password": "not-her-password"}, follow_redirects=True)
    assert "Wrong email or password" in wrong.text
    assert stranger.post("/squall-token", json={}).status_code == 401
    again = stranger.post("/login", data={"email": email, "password": "a-good-password"}, follow_redirects=True)
    assert "Alice" in again.text and stranger.post("/squall-token", json={}).status_code == 200


def test_the_shop_refuses_weak_signups_at_and_past_its_limits(stack: tuple[ServerProcess, ShopProcess]) -> None:
    _, shop = stack
    client = httpx.Client(base_url=shop.url, follow_redirects=True)
    short = client.post("/signup", data={"email": "x@shop.test", "name": "X", "password": "1234567"})
    assert "at least 8 characters" in short.text
    long_name = client.post("/signup", data={"email": "y@shop.test", "name": "N" * 65, "password": "12345678"})
    assert "1 to 64 printable characters" in long_name.text
    taken = client.post("/signup", data={"email": STAFF[0], "name": "Y", "password": "long-enough-1"})
    assert "has an account" in taken.text
    fine = client.post("/signup", data={"email": f"z-{uuid.uuid4().hex[:6]}@shop.test", "name": "N" * 64,
                                        "password": "12345678"})
    assert "Your orders" in fine.text
    too_long = client.post("/orders", data={"item": "i" * 101})
    assert "1 to 100 printable characters" in too_long.text
    assert "Order #" in client.post("/orders", data={"item": "i" * 100}).text


def test_an_order_opens_a_support_chat_with_the_staff(stack: tuple[ServerProcess, ShopProcess]) -> None:
    squall, shop = stack
    client, _ = sign_up(shop, "Bob")
    assert "Order #" in client.post("/orders", data={"item": "A red teapot"}).text
    token = squall_token(client)
    chats = httpx.get(squall.url + "/api/chats", headers={"Authorization": f"Bearer {token}"}).json()["chats"]
    [chat] = chats
    assert chat["title"].endswith("A red teapot") and chat["unread_count"] == 1
    assert sorted(m["display_name"] for m in chat["members"]) == ["Bob", STAFF[1]]
    history = httpx.get(squall.url + f"/api/chats/{chat['id']}/messages",
                        headers={"Authorization": f"Bearer {token}"}).json()["messages"]
    assert history[-1]["sender_name"] == "System" and "is placed" in history[-1]["content"]


def test_the_js_client_is_served_from_the_shop_origin(stack: tuple[ServerProcess, ShopProcess]) -> None:
    _, shop = stack
    module = httpx.get(shop.url + "/static/squall-client/index.js")
    assert module.status_code == 200 and "createSquall" in module.text
    assert module.headers["content-type"].startswith("text/javascript")
    assert httpx.get(shop.url + "/static/squall-client/../shop.py").status_code == 404
    assert httpx.get(shop.url + "/static/squall-client/index.d.ts").status_code == 404


def post_event(shop: ShopProcess, event: dict[str, Any], *, when: datetime | None = None,
               tamper: bool = False, secret: str = WEBHOOK_SECRET) -> httpx.Response:
    """POST ``event`` to the shop's webhook route, signed the Standard Webhooks way."""
    body = json.dumps(event).encode()
    when = when or datetime.now(timezone.utc)
    headers = {"webhook-id": event["id"], "webhook-timestamp": str(int(when.timestamp())),
               "webhook-signature": standardwebhooks.Webhook(secret).sign(event["id"], when, body),
               "Content-Type": "application/json"}
    return httpx.post(shop.url + "/squall/webhooks", content=body.replace(b"2", b"3") if tamper else body,
                      headers=headers)


def unseen_event(external_id: str, total: int) -> dict[str, Any]:
    return {"id": "evt_" + uuid.uuid4().hex, "type": "notification.unseen",
            "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "data": {"user": {"id": 7, "username": "~abc", "external_id": external_id},
                     "unread": {"total": total, "chats": [{"chat_id": 3, "key": "order-1", "count": total}]},
                     "previews": [{"chat_id": 3, "message_id": 12, "sender": {"id": 8, "username": "~def",
                                                                             "external_id": "shop-1"},  # the staff member
                                   "content": "Your teapot ships tomorrow", "created_at": "2026-12-04T15:00:00Z"}]}}


def wait_for_mail(shop: ShopProcess, count: int) -> list:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mail = shop.messages()
        if len(mail) >= count:
            return mail
        time.sleep(0.1)
    raise AssertionError(f"{len(shop.messages())} emails, {count} expected:\n{shop.log()}")


def test_the_webhook_route_verifies_and_emails_once(stack: tuple[ServerProcess, ShopProcess]) -> None:
    squall, shop = stack
    client, email = sign_up(shop, "Carol")
    sub = httpx.get(squall.url + "/api/me", headers={"Authorization": f"Bearer {squall_token(client)}"})
    assert sub.status_code == 200
    external_id = json.loads(client.get("/").text.split('id="shop-config">')[1].split("</script>")[0])["me"]["sub"]
    before = len(shop.messages())

    event = unseen_event(external_id, 2)
    assert post_event(shop, event, tamper=True).status_code == 400
    stale = post_event(shop, event, when=datetime.now(timezone.utc) - timedelta(minutes=6))
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_signature"
    assert post_event(shop, event, secret="whsec_" + "b3RoZXIta2V5LW90aGVyLWtleQ==").status_code == 400
    assert post_event(shop, event).status_code == 204
    [mail] = wait_for_mail(shop, before + 1)[before:]
    assert mail["To"] == email and mail["Subject"] == "You have 2 unread messages at the shop"
    assert f"{STAFF[1]}: Your teapot ships tomorrow" in mail.get_payload(decode=True).decode()

    assert post_event(shop, event).status_code == 204  # the same id again: at least once, emailed once
    assert post_event(shop, {**unseen_event("someone-else", 1)}).status_code == 204  # not a shop user
    time.sleep(1)
    assert len(shop.messages()) == before + 1



def test_the_readme_walkthrough_starts_squall_and_the_shop_as_the_code_reads_them() -> None:
    """README's "Embed Squall in your app": its run.py flags parse into the external-auth and
    webhook settings, and its exported variables configure the shop to match them."""
    readme = (ROOT / "README.md").read_text()
    start = readme.count("\n", 0, readme.index("## Embed Squall in your app")) + 1
    end = readme.count("\n", 0, readme.index("## Layout")) + 1
    [block] = [b for b in fenced_blocks("README.md") if start < b.line < end and b.lang == "sh"]
    env: dict[str, str] = {}
    squall_words: list[str] = []
    for line in block.text.replace("\\\n", " ").splitlines():
        words = [re.sub(r"\$(\w+)", lambda m: env[str(m.group(1))], word)
                 for word in shlex.split(line, comments=True)]
        if words[:1] == ["export"]:
            env.update(word.partition("=")[::2] for word in words[1:])
        elif "run.py" in words:
            squall_words = words
    python = squall_words.index("python")
    _, config = load_config(squall_words[squall_words.index("run.py") + 1:],
                            dict(word.partition("=")[::2] for word in squall_words[:python]))
    assert config.auth_mode == "external" and config.external_jwt_secret == env["SQUALL_JWT_SECRET"]
    assert config.webhook_secret == env["SQUALL_WEBHOOK_SECRET"]
    assert config.service_token == env["SQUALL_SERVICE_TOKEN"]

    shop_config = ShopConfig.from_env(env)
    assert (shop_config.jwt_issuer, shop_config.jwt_audience) == (config.external_jwt_issuer,
                                                                  config.external_jwt_audience)
    assert shop_config.squall_url == f"http://127.0.0.1:{config.port}"
    assert config.webhook_url == "http://127.0.0.1:5000/squall/webhooks"
    assert "http://127.0.0.1:5000" in config.allowed_origins
