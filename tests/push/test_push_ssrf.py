"""Web Push endpoints are hostile input the server sends requests to (issue 20, item 1).

Parsed once by urllib3 (the client that sends), refused when they could reach elsewhere than
a push service, sent to a checked address without following redirects, never logged; keys
checked before they are stored; another user's endpoint cannot be probed or deleted.
"""
import base64
import hashlib
import logging
from urllib.parse import urlencode

import pytest

from models import PushSubscription, utcnow
from tests.support.clients import ApiClient
from tests.conftest import SERVICE_TOKEN
from tests.support.procs import free_port
from tests.support.push_service import BrowserKeys, PushServer
from tests.support.push_service import subscribe
from tests.support.streams import wait_until
from tornado_app.config import Config
from tornado_app.errors import ValidationError
from tornado_app.services.outbound.push import PushService
from tornado_app.services.outbound.push_transport import PushRefused, PushTarget, is_public, resolve

ALLOW_HTTP = {"push_allow_http": True, "push_retries": 0, "push_threads": 1}
FCM = "https://fcm.googleapis.com/fcm/send/"


@pytest.fixture
def push_server(io_loop):
    server = io_loop.run_sync(PushServer.start)
    yield server
    server.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def push_to(api: ApiClient, user: dict, message: str) -> None:
    status, body = await api.call("POST", "/api/notifications", {"user_ids": [user["id"]], "type": "announcement",
                                                                  "message": message, "push": True},
                                  token=SERVICE_TOKEN)
    assert status == 202, body


@pytest.mark.gen_test(timeout=30)
async def test_endpoints_that_reach_elsewhere_are_400_and_nothing_is_stored(api, users, services):
    (alice,) = await users("alice")
    keys = BrowserKeys()
    refused = [
        "https://127.0.0.2\\@fcm.googleapis.com/fcm/send/x",  # urllib.parse: Google; urllib3: 127.0.0.2
        "https://127.0.0.2\\\\@fcm.googleapis.com/fcm/send/x",
        "https://user@fcm.googleapis.com/fcm/send/x",
        "https://user:pw@fcm.googleapis.com/fcm/send/x",
        "https://@fcm.googleapis.com/fcm/send/x",
        "https://127.0.0.2/fcm/send/x",
        "https://[::1]/fcm/send/x",
        "https://fcm.googleapis.com:8443/fcm/send/x",
        "https://fcm.googleapis.com:80/fcm/send/x",
        "https://[x",
        "https://[x/fcm/send/x",
        "https://fcm.googleapis.com:99999/x",
        "https://fcm.googleapis.com /fcm/send/x",
        "https://fcm.googleapis.com/fcm/send/x\n",
        "https://fcm.googleapis.com/fcm/send/\tx",
        "https://fcm.googleapis.com/fcm/send/\x00x",
        "https://fcm.googleapis.com/fcm/send/x\x7f",
        "https://fcm.googleapis.com/fcm/send/\u00e9",
        "https://fcm.googleapis.com/fcm/send/x#frag",
        "https:/fcm.googleapis.com/fcm/send/x",
        "http://fcm.googleapis.com/fcm/send/x",
        "fcm.googleapis.com/fcm/send/x",
        "https://fcm.googleapis.com.evil.net/x",
    ]
    for endpoint in refused:
        status, error = await api.call("POST", "/api/push/subscriptions", keys.subscription(endpoint),
                                       token=alice["token"])
        code = "invalid_text" if "\x00" in endpoint else "invalid_subscription"  # NUL: refused in any JSON body
        assert status == 400 and error["error"]["code"] == code, (endpoint, status, error)
    status, listed = await api.call("GET", "/api/push/subscriptions", token=alice["token"])
    assert listed["subscriptions"] == []
    # The push services' own endpoints (an explicit :443 too) are accepted.
    for endpoint in (FCM + "x", "https://fcm.googleapis.com:443/fcm/send/y",
                     "https://updates.push.services.mozilla.com/wpush/v2/x?a=b"):
        await subscribe(api, alice, endpoint, keys)


@pytest.mark.gen_test(timeout=30)
async def test_each_rule_holds_on_its_own(services):
    """Past the host list (--push-hosts '*'), each rule refuses by itself; --push-allow-http lifts
    the scheme, IP literal and port rules only."""
    good = BrowserKeys().subscription(FCM + "x")
    anywhere = PushService(Config(push_hosts=("*",)), services.dbx, services.hub, services.preferences,
                           services.metrics.metrics)
    local = PushService(Config(push_allow_http=True), services.dbx, services.hub, services.preferences,
                        services.metrics.metrics)
    try:
        cases = {
            "https://127.0.0.2\\@push.example.com/x": "backslash",
            "https://u@push.example.com/x": "user name",
            "https://127.0.0.2/x": "not an IP address",
            "https://[::1]/x": "not an IP address",
            "https://2130706433/x": "not an IP address",  # a resolver reads it as 127.0.0.1
            "https://127.1/x": "not an IP address",
            "https://localhost/x": "not an IP address",
            "https://push.example.com:8443/x": "port 443",
            "https://[x": "not a valid URL",
            "https://push.example.com/ x": "printable ASCII",
            "https://push.example.com/\x00x": "printable ASCII",
            "http://push.example.com/x": "https://",
        }
        for endpoint, reason in cases.items():
            with pytest.raises(ValidationError) as refused:
                anywhere.validate({**good, "endpoint": endpoint})
            assert reason in refused.value.message and refused.value.code == "invalid_subscription", endpoint
        assert anywhere.target("https://push.example.com:443/x?y") == PushTarget("https", "push.example.com",
                                                                                  443, "/x?y")
        # A local push service: http, IP literals and ports are fine; the rest still is not.
        assert local.target("http://127.0.0.1:8080/p") == PushTarget("http", "127.0.0.1", 8080, "/p")
        assert local.target("https://[::1]:8443/p").origin == "https://[::1]:8443"
        for endpoint in ("http://127.0.0.2\\@127.0.0.1/x", "http://u@127.0.0.1/x", "http://[x", "http://a b/x"):
            with pytest.raises(ValidationError):
                local.validate({**good, "endpoint": endpoint})
    finally:
        anywhere._pool.shutdown()
        local._pool.shutdown()


@pytest.mark.gen_test(timeout=30)
async def test_bad_keys_are_400_and_never_stored(api, users):
    (alice,) = await users("alice")
    keys = BrowserKeys()
    good = keys.subscription(FCM + "keys")
    point = base64.urlsafe_b64decode(good["keys"]["p256dh"] + "=")
    p256dh_bad = [
        b64(b"\x04" + b"\x01" * 64),  # 65 bytes, 0x04, not on the curve
        b64(b"\x05" + point[1:]),  # on the curve, but not the uncompressed prefix
        b64(bytes([2 + (point[-1] & 1)]) + point[1:33]),  # the same point compressed (33 bytes)
        b64(point[:-1]),
        b64(point + b"\x00"),
        good["keys"]["p256dh"][:-1] + "+",  # standard base64, not base64url
        good["keys"]["p256dh"] + " ",
        "",
        65,
        None,
    ]
    auth_bad = [b64(b"x" * 15), b64(b"x" * 17), "", "!!!!!!!!!!!!!!!!!!!!!!", b64(b"x" * 16) + "\n", 16,
                "A" * 5000]
    bodies = [{**good, "keys": {**good["keys"], "p256dh": p}} for p in p256dh_bad]
    bodies += [{**good, "keys": {**good["keys"], "auth": a}} for a in auth_bad]
    bodies += [{**good, "keys": None}, {**good, "keys": []}, {"endpoint": good["endpoint"]}]
    for body in bodies:
        status, error = await api.call("POST", "/api/push/subscriptions", body, token=alice["token"])
        assert status == 400 and error["error"]["code"] == "invalid_subscription", (body, status, error)
    status, listed = await api.call("GET", "/api/push/subscriptions", token=alice["token"])
    assert listed["subscriptions"] == []
    # At the bounds: a real browser's key and a 16-byte secret, padded or not.
    await subscribe(api, alice, FCM + "keys", keys)
    padded = {**good, "endpoint": FCM + "padded",
              "keys": {"p256dh": good["keys"]["p256dh"] + "=", "auth": good["keys"]["auth"] + "=="}}
    status, _ = await api.call("POST", "/api/push/subscriptions", padded, token=alice["token"])
    assert status == 201


@pytest.mark.gen_test(timeout=30)
async def test_deleting_another_users_endpoint_answers_as_an_unknown_one(api, users):
    alice, bob = await users("alice", "bob")
    endpoint = FCM + "bobs-browser"
    await subscribe(api, bob, endpoint)

    async def delete(endpoint_url):
        return await api.call("DELETE", "/api/push/subscriptions?" + urlencode({"endpoint": endpoint_url}),
                              token=alice["token"])
    theirs = await delete(endpoint)
    unknown = await delete(FCM + "nobody-has-this")
    assert theirs == unknown and theirs[0] == 404, (theirs, unknown)
    assert theirs[1]["error"]["code"] == "subscription_not_found"
    status, listed = await api.call("GET", "/api/push/subscriptions", token=bob["token"])
    assert [s["endpoint"] for s in listed["subscriptions"]] == [endpoint]


@pytest.mark.parametrize("config_overrides", [ALLOW_HTTP])
@pytest.mark.gen_test(timeout=30)
async def test_a_redirect_is_a_failed_push_and_never_followed(api, users, push_server, services):
    (bob,) = await users("bob")
    second = await PushServer.start()  # where the push service redirects to
    try:
        push_server.statuses = [307]
        push_server.location = second.endpoint("elsewhere")
        await subscribe(api, bob, push_server.endpoint("redirects"))
        await push_to(api, bob, "go elsewhere")
        await push_server.wait_for(1)
        metrics = services.metrics.metrics
        await wait_until(lambda: metrics.pushes["failed"] == 1 and metrics.push_queue == 0, what="failed push")
        assert second.received == [] and metrics.pushes["sent"] == 0 and metrics.push_retries == 0
        # 303 and 308 alike; the subscription stays (only 404/410 delete it).
        push_server.statuses = [303, 308]
        for status in (303, 308):
            await push_to(api, bob, f"{status} elsewhere")
        await wait_until(lambda: metrics.pushes["failed"] == 3, what="two more failed pushes")
        assert second.received == [] and len(push_server.received) == 3
        status, listed = await api.call("GET", "/api/push/subscriptions", token=bob["token"])
        assert len(listed["subscriptions"]) == 1
    finally:
        second.stop()


@pytest.mark.gen_test(timeout=30)
async def test_rows_older_than_the_rules_are_never_sent(api, users, push_server, services):
    """A row stored before these rules (the endpoint no longer validates) is refused at send time."""
    (bob,) = await users("bob")
    keys = BrowserKeys()
    for name in ("legacy", "legacyslash"):
        endpoint = push_server.endpoint(name)  # http://127.0.0.1:<port>/push/…: refused without --push-allow-http
        if name == "legacyslash":
            endpoint = endpoint.replace("http://", "https://fcm.googleapis.com\\@")
        await services.dbx.write(lambda e=endpoint: PushSubscription.create(
            user=bob["id"], endpoint=e, endpoint_hash=hashlib.sha256(e.encode()).hexdigest(), p256dh=keys.p256dh,
            auth=b64(keys.auth), created_at=utcnow()))
    services.preferences.subscriptions_changed(bob["id"], 2)
    await push_to(api, bob, "old rows")
    metrics = services.metrics.metrics
    await wait_until(lambda: metrics.pushes["failed"] == 2, what="two refused pushes")
    assert push_server.received == [] and metrics.pushes["sent"] == 0


def test_names_resolving_to_internal_addresses_are_refused_at_send_time():
    with pytest.raises(PushRefused):
        resolve(PushTarget("https", "localhost", 443, "/x"), allow_private=False)
    assert resolve(PushTarget("http", "localhost", 80, "/x"), allow_private=True) == ["127.0.0.1"]
    with pytest.raises(PushRefused):
        resolve(PushTarget("https", "no-such-host.invalid", 443, "/x"), allow_private=False)
    internal = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                "224.0.0.1", "239.1.1.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
                "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1", "64:ff9b::a00:1"]
    for address in internal:
        assert not is_public(address), address
    for address in ("142.250.74.42", "8.8.8.8", "2a00:1450:4001:82b::200a", "::ffff:8.8.8.8"):
        assert is_public(address), address


@pytest.mark.same_in_both_runs  # its own SQLite file: the log is what it tests
@pytest.mark.gen_test(timeout=90)
async def test_no_endpoint_reaches_the_debug_log(server_factory, push_server, tmp_path):
    """A child server at --log-level debug: a sent push, a redirect, a refused connection, a
    listing and a delete by ?endpoint= — none of their endpoints is in any log line."""
    redirect = await PushServer.start()
    server = server_factory("--database-url", f"sqlite:///{tmp_path}/push-log.db", "--log-level", "debug",
                            "--push-allow-http", "--push-retries", "0",
                            "--push-threads", "1", LOG_LEVEL="debug")
    try:
        api = ApiClient(server.url)
        bob = await api.register("bob")
        redirect.statuses, redirect.location = [307], push_server.endpoint("capabilityredirectto")
        endpoints = {"capabilitysent": push_server.endpoint("capabilitysent"),
                     "capabilityredirect": redirect.endpoint("capabilityredirect"),
                     "capabilityrefused": f"http://127.0.0.1:{free_port()}/push/capabilityrefused"}
        for endpoint in endpoints.values():
            await subscribe(api, bob, endpoint)
        await push_to(api, bob, "hello log")
        await push_server.wait_for(1)
        await redirect.wait_for(1)
        status, _ = await api.call("GET", "/api/push/subscriptions", token=bob["token"])
        assert status == 200
        status, _ = await api.call("DELETE", "/api/push/subscriptions?" + urlencode(
            {"endpoint": endpoints["capabilitysent"]}), token=bob["token"])
        assert status == 200

        def logged():
            with open(server.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        await wait_until(lambda: "failed (status 307)" in logged() and "push request failed" in logged(),
                         what="the failed pushes logged")
        assert server.stop() == 0
        log = logged()
        assert "POST /api/push/subscriptions" in log  # the access log was written
        for name in (*endpoints, "capabilityredirectto"):
            assert name not in log, name
        assert len(push_server.received) == 1  # the redirect was not followed
    finally:
        redirect.stop()


def test_http_client_loggers_are_silenced_in_process(services):
    for name in ("urllib3", "urllib3.connectionpool", "requests"):
        assert not logging.getLogger(name).isEnabledFor(logging.CRITICAL), name
