"""Pages and static files: served from web/, errors in the one JSON shape."""
import pytest


@pytest.mark.gen_test(timeout=30)
async def test_missing_static_file_gets_the_json_error(api):
    status, body = await api.call("GET", "/static/js/no-such-module.js")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.call("GET", "/static/js/realtime.js")
    assert status == 200 and "export" in body


@pytest.mark.gen_test(timeout=30)
async def test_service_worker_and_manifest_at_the_root(api):
    """/sw.js: root scope, never cached, a JavaScript type, no imports; the manifest installs the app."""
    import json
    import re
    status, body = await api.call("GET", "/sw.js")
    headers = api.last_headers
    assert status == 200 and headers["Content-Type"].startswith("application/javascript")
    assert headers["Cache-Control"] == "no-cache" and headers["Service-Worker-Allowed"] == "/"
    assert 'addEventListener("push"' in body and not re.search(r"^\s*import\b", body, re.M)
    status, _ = await api.call("GET", "/sw.js", headers={"If-None-Match": headers["ETag"]})
    assert status == 304
    status, body = await api.call("GET", "/manifest.webmanifest")
    assert status == 200 and api.last_headers["Content-Type"] == "application/manifest+json"
    manifest = json.loads(body) if isinstance(body, str) else body
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        resp = await api.http.fetch(api.base_url + icon["src"], raise_error=False)
        assert resp.code == 200 and resp.headers["Content-Type"] == icon["type"]
    status, page = await api.call("GET", "/settings")
    assert status == 200 and 'rel="manifest"' in page and "/static/js/settings.js?v=" in page
    resp = await api.http.fetch(api.base_url + "/static/sound/chime.wav", raise_error=False)
    assert resp.code == 200 and resp.headers["Content-Type"].startswith("audio/") and resp.body[:4] == b"RIFF"
    assert len(resp.body) < 16 * 1024


@pytest.mark.gen_test(timeout=30)
async def test_the_client_package_is_served_as_modules(api):
    """@squall/client's own files (clients/js/src) at /static/squall-client/ (issue 24 item 3):
    realtime.js imports them; nothing outside that folder is reachable through the prefix."""
    status, body = await api.call("GET", "/static/squall-client/index.js")
    assert status == 200 and "createSquall" in body
    assert api.last_headers["Content-Type"] == "application/javascript; charset=utf-8"
    status, body = await api.call("GET", "/static/js/realtime.js")
    assert status == 200 and '"/static/squall-client/index.js"' in body
    for path in ("/static/squall-client/../package.json", "/static/squall-client/%2e%2e/package.json",
                 "/static/squall-client/nope.js"):
        status, body = await api.call("GET", path)
        assert status in (403, 404) and body["error"]["code"] in ("not_found", "forbidden"), path
