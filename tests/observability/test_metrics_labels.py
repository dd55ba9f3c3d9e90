"""The request metrics' labels come from fixed sets: invented methods add no series (issue 20, item 7)."""
import pytest
import tornado.httpclient

from tests.support.metrics import METRICS_TOKEN, scrape
from tests.support.routes import routed_handlers
from tornado_app.services.operations.metrics import HTTP_METHODS

ROUTES = ["/api/me", "/healthz", "/no/such/route", "/static/js/api.js", "/chat/12", "/api/chats/7/messages"]


@pytest.fixture
def config_overrides():
    return {"metrics_token": METRICS_TOKEN}


def http_series(samples: dict) -> set:
    """The label sets of ``squall_http_requests_total``."""
    return {labels for (name, labels) in samples if name == "squall_http_requests_total"}


async def invent(api, n: int, start: int = 0) -> None:
    """``n`` requests, each with a method nobody uses (FOO0, FOO1, …), spread over ``ROUTES``."""
    client = tornado.httpclient.AsyncHTTPClient()
    for i in range(start, start + n):
        resp = await client.fetch(api.base_url + ROUTES[i % len(ROUTES)], method=f"FOO{i}",
                                  allow_nonstandard_methods=True, raise_error=False)
        assert resp.code == 405, (i, resp.code)


@pytest.mark.gen_test(timeout=120)
async def test_invented_methods_add_no_label_value(api, app):
    await invent(api, len(ROUTES))  # each route's "other" series exists from here on
    await scrape(api)  # and the scrape's own series
    before = await scrape(api)
    await invent(api, 200, start=len(ROUTES))
    after = await scrape(api)

    assert http_series(after) == http_series(before)  # 200 invented methods: not one new series
    others = sum(v - before.get(k, 0) for k, v in after.items()
                 if k[0] == "squall_http_requests_total" and ("method", "other") in k[1])
    assert others == 200
    methods = {dict(labels)["method"] for labels in http_series(after)}
    assert methods <= HTTP_METHODS | {"other"} and "other" in methods
    # Routes are the app's templates (pages share "page"), never a concrete path.
    templates = {pattern for pattern, _ in routed_handlers(app.default_router)}
    routes = {dict(labels)["route"] for labels in http_series(after)}
    assert routes <= {p.rstrip("$") for p in templates} | {"page", "unmatched", "invalid_path"}, routes
    assert "/api/chats/([0-9]{1,18})/messages" in routes and "page" in routes and "unmatched" in routes

    status, text = await api.call("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and "FOO" not in text
