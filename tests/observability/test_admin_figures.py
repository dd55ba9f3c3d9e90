"""The admin console's figures (issue 20, item 17): Errors counts the server's own failures (5xx);
refused requests (4xx, such as a signed-out page's 401) are counted apart as client errors."""
import pytest


@pytest.fixture
def config_overrides():
    # --block-websockets answers every /ws/* request 503: a real 5xx to count.
    return {"block_websockets": True, "admin_sample_seconds": 3600}


@pytest.mark.gen_test(timeout=60)
async def test_errors_count_5xx_and_client_errors_count_4xx(api, users, services):
    root, = await users("root")
    services.monitor.sample()  # the baseline
    for _ in range(3):
        status, _ = await api.call("GET", "/api/me", token="not-a-token")
        assert status == 401
    status, _ = await api.call("GET", "/no/such/route")
    assert status == 404
    for _ in range(2):
        status, _ = await api.call("GET", "/ws/chat", token=root["token"])
        assert status == 503
    services.monitor.sample()
    summary = services.monitor.summary()
    newest = summary["series"][-1]
    assert newest["errors"] == 2 and newest["client_errors"] == 4, newest
    assert summary["totals"]["errors"] == 2 and summary["totals"]["client_errors"] >= 4, summary["totals"]
