"""A real nginx in front of a test server, configured as a proxy that buffers every answer.

``proxy_buffering on`` with ``proxy_ignore_headers X-Accel-Buffering`` (the server's "don't
buffer me" is ignored, as antivirus gateways and filtering proxies do) and no WebSocket
upgrade forwarding. It speaks nginx's default HTTP/1.0 to the server, so an event stream
(an answer without a length that never ends) is held back whole, headers included, while a
complete answer (a poll: ``Content-Length``) passes as soon as it is there. nginx runs as a
non-daemon child with its own prefix, config, pid and log files in a temporary folder, on a
free port. ``.ci/run`` installs it; a developer run
without nginx skips with the reason (CI must not: it sets CI=true).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.support.procs import free_port, stop_process

NGINX = os.environ.get("SQUALL_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $http_host;
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def nginx_or_skip() -> str:
    """The nginx binary; a clear skip on a developer machine without it (never in CI)."""
    if os.path.exists(NGINX) and os.access(NGINX, os.X_OK):
        return NGINX
    if os.environ.get("CI"):
        raise RuntimeError(f"nginx is missing ({NGINX}): .ci/run installs it with apt-get")
    pytest.skip("nginx is not installed (apt-get install nginx); the buffering-proxy tests need it")


class BufferingNginx:
    """nginx on 127.0.0.1:``port`` proxying to ``upstream_port``, buffering; ``url``, ``close()``."""

    def __init__(self, upstream_port: int, folder: str):
        binary = nginx_or_skip()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(dir=folder, port=self.port, upstream=upstream_port))
        self.proc = subprocess.Popen([binary, "-p", folder, "-c", conf, "-e", os.path.join(folder, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"nginx did not listen on {self.port}: {self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        """nginx's error log so far."""
        try:
            with open(os.path.join(self.folder, "error.log")) as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stop nginx (its own child; QUIT, then KILL)."""
        stop_process(self.proc)
