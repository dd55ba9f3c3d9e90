"""Versioned, compressed front-end files without a build step.

Every page names its files as ``/static/…?v=<content hash>`` (rewritten when the page is
served), and an import map in the page gives each ES module of ``static/js`` its hashed URL,
so ``import … from "./api.js"`` inside a module loads ``/static/js/api.js?v=…`` too. A file
asked for with its current hash is cached for a year (``immutable``); a changed file gets a
new hash at once, so a deploy needs no cache purge and no restart. Text files are gzipped
once per change and served compressed to clients that accept it.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import mimetypes
import os
import re
from dataclasses import dataclass
from typing import Optional

# Compressing these pays; images other than SVG are compressed already.
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
# Below this, a gzip header and a Vary header cost more than they save.
MIN_GZIP_BYTES = 256
IMMUTABLE = "public, max-age=31536000, immutable"
STATIC_PREFIX = "/static/"
# @squall/client (clients/js/src) is served as static ES modules under this prefix: the pages
# import the very files of the npm package (issue 24), hashed and import-mapped like web/'s.
CLIENT_PREFIX = "/static/squall-client/"
CLIENT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clients", "js", "src")
_STATIC_REF = re.compile(rb'(\b(?:href|src)=")(/static/[^"?#]+)(")')


@dataclass(frozen=True)
class Asset:
    """One file as read: its bytes, gzipped bytes (None when not worth it), hash and type."""
    body: bytes
    gzipped: Optional[bytes]
    version: str
    content_type: str


@dataclass(frozen=True)
class Page:
    """A page ready to send: the HTML with hashed URLs and the CSP hash of its import map."""
    body: bytes
    import_map_sha256: str


def content_type(path: str) -> str:
    """The Content-Type of a front-end file (JavaScript modules need a JavaScript type)."""
    if path.endswith((".js", ".mjs")):
        return "application/javascript; charset=utf-8"
    guessed, _ = mimetypes.guess_type(path)
    guessed = guessed or "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed


class AssetCatalog:
    """The files of ``web/``, read and hashed once per change (size and mtime), never per request.

    Only files that exist are kept, so the cache is bounded by the size of ``web/``.
    """

    def __init__(self, web_dir: str, client_dir: str = CLIENT_DIR):
        self.web_dir = os.path.realpath(web_dir)
        self.static_dir = os.path.realpath(os.path.join(self.web_dir, "static"))
        self.client_dir = os.path.realpath(client_dir)
        self._files: dict = {}   # absolute path -> ((mtime_ns, size), Asset)

    def load(self, path: str) -> Asset:
        """The file at absolute ``path`` (raises OSError if it cannot be read)."""
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size)
        cached = self._files.get(path)
        if cached and cached[0] == key:
            return cached[1]
        with open(path, "rb") as f:
            body = f.read()
        ctype = content_type(path)
        gzipped = None
        if len(body) >= MIN_GZIP_BYTES and ctype.startswith(COMPRESSIBLE):
            packed = gzip.compress(body, compresslevel=9, mtime=0)
            gzipped = packed if len(packed) < len(body) else None
        asset = Asset(body, gzipped, hashlib.sha256(body).hexdigest()[:16], ctype)
        self._files[path] = (key, asset)
        return asset

    def url(self, static_url: str) -> str:
        """``/static/x`` → ``/static/x?v=<hash>``; unchanged if the file is missing."""
        root, prefix = ((self.client_dir, CLIENT_PREFIX) if static_url.startswith(CLIENT_PREFIX)
                        else (self.static_dir, STATIC_PREFIX))
        path = os.path.realpath(os.path.join(root, static_url[len(prefix):]))
        if not path.startswith(root + os.sep):
            return static_url
        try:
            return f"{static_url}?v={self.load(path).version}"
        except OSError:
            return static_url

    def import_map(self) -> dict:
        """``{"imports": {"/static/js/a.js": "/static/js/a.js?v=…", …}}`` for every module."""
        imports = {}
        js_dir = os.path.join(self.static_dir, "js")
        for folder, _dirs, names in os.walk(js_dir):
            for name in sorted(names):
                if name.endswith((".js", ".mjs")):
                    rel = os.path.relpath(os.path.join(folder, name), self.static_dir).replace(os.sep, "/")
                    imports[STATIC_PREFIX + rel] = self.url(STATIC_PREFIX + rel)
        if os.path.isdir(self.client_dir):
            for name in sorted(os.listdir(self.client_dir)):
                if name.endswith(".js"):
                    imports[CLIENT_PREFIX + name] = self.url(CLIENT_PREFIX + name)
        return {"imports": dict(sorted(imports.items()))}

    def page(self, name: str) -> Page:
        """Page ``name`` of ``web/`` with hashed static URLs and the import map before its scripts."""
        html = self.load(os.path.join(self.web_dir, name)).body
        html = _STATIC_REF.sub(lambda m: m.group(1) + self.url(m.group(2).decode()).encode() + m.group(3), html)
        script = json.dumps(self.import_map(), separators=(",", ":"))
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        tag = f'<script type="importmap">{script}</script>\n  '.encode()
        at = html.find(b"<script")
        html = html[:at] + tag + html[at:] if at >= 0 else html.replace(b"</head>", tag + b"</head>", 1)
        return Page(html, digest)


def accepts_gzip(accept_encoding: str) -> bool:
    """True if an ``Accept-Encoding`` value allows gzip (``gzip;q=0`` does not)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _qvalue(q[2:]) == 0)
    return False


def _qvalue(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0
