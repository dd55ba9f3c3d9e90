"""Pages and static files: served from web/, errors in the one JSON shape."""
import pytest


@pytest.mark.gen_test(timeout=30)
async def test_missing_static_file_gets_the_json_error(api):
    status, body = await api.call("GET", "/static/js/no-such-module.js")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.call("GET", "/static/js/realtime.js")
    assert status == 200 and "export" in body
