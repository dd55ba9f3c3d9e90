"""examples/react-chat for the browser tests: built with its own esbuild, served from another
origin than Squall's by a small static server that is also "the product's backend": its
``/token?user=<name>`` mints a fresh Squall access token (rotating the user's refresh token
with ``POST /api/auth/refresh``) and counts the calls, and can be told to fail.
"""
from __future__ import annotations

import http.server
import json
import mimetypes
import os
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from typing import Dict, Optional

from tests.support.procs import ROOT

EXAMPLE = os.path.join(ROOT, "examples", "react-chat")
NPM = shutil.which("npm") or "npm"


def _run(args: list, cwd: str, **env: str) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def build_example(out_dir: str) -> str:
    """``npm ci`` (when its node_modules is missing) and a development build (StrictMode's double
    effects run only there) into ``out_dir``; returns ``out_dir``."""
    if not os.path.exists(os.path.join(EXAMPLE, "node_modules", "esbuild", "package.json")):
        _run([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], EXAMPLE)
    _run(["node", "build.mjs"], EXAMPLE, NODE_ENV="development", OUT_DIR=out_dir)
    return out_dir


class ExampleSite:
    """The built example on ``origin`` (127.0.0.1, its own port) plus the token endpoint.

    ``add_user(name, user)`` registers a user dict of tests.support.browser.register (with its
    ``refresh`` token); ``token_calls[name]`` counts ``/token?user=name`` requests; while
    ``failing`` holds ``name`` the endpoint answers 503; ``app_url(server_url, name)``.
    """

    def __init__(self, dist: str, squall_url: str):
        self.dist = dist
        self.squall_url = squall_url
        self.refresh: Dict[str, str] = {}
        self.token_calls: Dict[str, int] = {}
        self.failing: set = set()
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/token":
                    name = urllib.parse.parse_qs(url.query).get("user", [""])[0]
                    status, body = site.mint(name)
                    self.answer(status, "application/json", json.dumps(body).encode())
                    return
                rel = url.path.lstrip("/") or "index.html"
                path = os.path.realpath(os.path.join(site.dist, rel))
                if not path.startswith(os.path.realpath(site.dist) + os.sep) or not os.path.isfile(path):
                    self.answer(404, "text/plain", b"not found")
                    return
                with open(path, "rb") as f:
                    data = f.read()
                self.answer(200, mimetypes.guess_type(path)[0] or "application/octet-stream", data)

            def answer(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add_user(self, name: str, user: dict) -> None:
        self.refresh[name] = user["refresh"]
        self.token_calls[name] = 0

    def mint(self, name: str) -> tuple:
        """``(status, body)`` of one token request: a fresh access token of ``name``."""
        # One rotation at a time: presenting a spent refresh token would revoke the session.
        with self.lock:
            if name not in self.refresh:
                return 404, {"error": {"code": "unknown_user", "message": "no such user"}}
            self.token_calls[name] += 1
            if name in self.failing:
                return 503, {"error": {"code": "unavailable", "message": "the token service is down"}}
            try:
                return 200, {"token": self.access_token(name)}
            except OSError as exc:   # Squall refused or is down: the page's getToken fails
                return 502, {"error": {"code": "refresh_failed", "message": str(exc)}}

    def access_token(self, name: str) -> str:
        """A fresh access token of ``name`` (a rotation of its refresh token); callers hold ``lock``."""
        data = json.dumps({"refresh_token": self.refresh[name]}).encode()
        req = urllib.request.Request(self.squall_url + "/api/auth/refresh", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = json.loads(resp.read())
        self.refresh[name] = body["refresh_token"]
        return body["access_token"]

    def fresh_token(self, name: str) -> str:
        """A fresh access token for the test's own HTTP calls as ``name`` (not counted)."""
        with self.lock:
            return self.access_token(name)

    def app_url(self, server_url: Optional[str], name: str, toast_ms: int = 60_000) -> str:
        query = urllib.parse.urlencode({"server": server_url or self.squall_url, "tokenUrl": f"/token?user={name}",
                                        "toastMs": str(toast_ms)})
        return f"{self.origin}/?{query}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

