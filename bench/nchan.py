"""Nchan (nginx + the Nchan module, C), an optional peer: the limit of what this machine allows.

Debian's ``nginx`` with ``libnginx-mod-nchan`` (``apt-get install libnginx-mod-nchan``), one
process (``master_process off``, so the measured pid is the one doing the work), pinned to
the server core like Squall. It speaks the same URLs as Squall to the load generator:

- ``/ws/notifications`` (WebSocket) and ``/sse/notifications`` (EventSource): subscribers
  of one channel; the query string (the token) is ignored, Nchan has no auth here;
- ``POST /api/notifications``: publishes the request body, as is, to every subscriber;
- ``/healthz``.

The channel keeps its newest message and gives it to each new subscriber, so every stream
starts with one payload, like Squall's ``unread`` frame (the load generator waits for it).
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
import urllib.request
from typing import Optional

from .servers import Server

MODULE_PATHS = ("/usr/lib/nginx/modules/ngx_nchan_module.so", "/usr/share/nginx/modules/ngx_nchan_module.so")

CONFIG = """load_module {module};
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile {nofile};
error_log {work}/nchan-error.log warn;
pid {work}/nchan.pid;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {work}/nchan-tmp;
    proxy_temp_path {work}/nchan-tmp;
    fastcgi_temp_path {work}/nchan-tmp;
    uwsgi_temp_path {work}/nchan-tmp;
    scgi_temp_path {work}/nchan-tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{ return 200 "ok"; }}
        location = /ws/notifications {{
            nchan_subscriber websocket;
            nchan_channel_id notifications;
            nchan_subscriber_first_message oldest;
        }}
        location = /sse/notifications {{
            nchan_subscriber eventsource;
            nchan_channel_id notifications;
            nchan_subscriber_first_message oldest;
        }}
        location = /api/notifications {{
            nchan_publisher;
            nchan_channel_id notifications;
            nchan_message_buffer_length 1;
            nchan_message_timeout 1h;
        }}
    }}
}}
"""


def nchan_module() -> Optional[str]:
    """The Nchan module's path when nginx and the module are installed, else None."""
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        return None
    return next((p for p in MODULE_PATHS if os.path.exists(p)), None)


def why_absent() -> str:
    """The note printed when Nchan is not there."""
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        return "nginx is not installed (apt-get install nginx libnginx-mod-nchan)"
    return "the Nchan module is not installed (apt-get install libnginx-mod-nchan)"


class NchanServer(Server):
    """nginx + Nchan in one pinned process on a free port of 127.0.0.1."""

    def __init__(self, workdir: str, pin: dict, module: str, connections: int = 60000):
        self.workdir = workdir
        self.conf_path = os.path.join(workdir, "nchan.conf")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        super().__init__("nchan", [*pin["server"], nginx, "-c", self.conf_path, "-p", workdir],
                         os.path.join(workdir, "nchan.log"))
        self.module = module
        self.connections = connections

    def start(self, timeout: float = 60.0) -> "NchanServer":
        """Write the configuration, start nginx, wait for /healthz, publish the first message."""
        os.makedirs(os.path.join(self.workdir, "nchan-tmp"), exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # nginx cannot raise it past the hard limit
        with open(self.conf_path, "w") as f:
            f.write(CONFIG.format(module=self.module, work=self.workdir, port=self.port,
                                  connections=min(self.connections, nofile - 100), nofile=nofile))
        super().start(timeout)
        self.publish_first()
        return self

    def publish_first(self) -> None:
        """One stored message, which each new subscriber gets first (its "unread" frame)."""
        body = b'{"type":"unread","total":0,"chats":{}}'
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/notifications", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            if resp.status not in (200, 201, 202):
                raise RuntimeError(f"nchan publish answered {resp.status}")

    def log(self) -> str:
        """nginx's error log and what it printed."""
        text = super().log()
        try:
            with open(os.path.join(self.workdir, "nchan-error.log"), "rb") as f:
                text += f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            pass
        return text


def version() -> str:
    """``nginx/1.22.1 + nchan 1:1.3.6`` or what is known."""
    out = []
    try:
        out.append(subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=5).stderr.strip()
                   .replace("nginx version: ", ""))
    except Exception:
        pass
    try:
        out.append("nchan " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"],
                                             capture_output=True, text=True, timeout=5).stdout.strip())
    except Exception:
        pass
    return " + ".join(x for x in out if x) or "?"


def wait_gone(server: Server, timeout: float = 10.0) -> None:
    """Wait until the port is free again after a stop (nginx closes its listener last)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=0.5)
        except OSError:
            return
        time.sleep(0.05)
