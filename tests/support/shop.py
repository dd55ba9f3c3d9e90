"""examples/flask_shop for tests: Squall (``run.py`` in external mode, the shop's origin allowed)
and the shop (``run_shop.py`` with its own SMTP server writing an mbox file), each a real process
on its own port of 127.0.0.1."""
from __future__ import annotations

import base64
import mailbox
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

from tests.support.procs import ROOT, ServerProcess, free_port, start_server, stop_process

SHOP = Path(ROOT) / "examples" / "flask_shop"
CLIENT_SRC = Path(ROOT) / "clients" / "python" / "src"
JWT_SECRET = "shop-jwt-secret-" + "j" * 32
JWT_ISSUER = "http://shop.test"
JWT_AUDIENCE = "squall"
SERVICE_TOKEN = "test-service-token"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"shop-webhook-key-" + b"w" * 15).decode()
STAFF = ("staff@shop.test", "Sam Support", "staff-password-1")


class ShopProcess:
    """``run_shop.py`` as a child: ``url``, ``origin``, ``mailbox``, ``messages()``, ``stop()``."""

    def __init__(self, tmp: Path, port: int, squall_url: str) -> None:
        self.port = port
        self.url = self.origin = f"http://127.0.0.1:{port}"
        self.smtp_port = free_port()
        self.mailbox = str(tmp / "mailbox.mbox")
        self.env = {**os.environ, "PYTHONPATH": str(CLIENT_SRC), "SHOP_DATABASE": str(tmp / "shop.db"),
                    "SHOP_SECRET_KEY": "shop-session-key-" + "k" * 16, "SQUALL_URL": squall_url,
                    "SQUALL_SERVICE_TOKEN": SERVICE_TOKEN, "SQUALL_JWT_SECRET": JWT_SECRET,
                    "SQUALL_JWT_ISSUER": JWT_ISSUER, "SQUALL_JWT_AUDIENCE": JWT_AUDIENCE,
                    "SQUALL_WEBHOOK_SECRET": WEBHOOK_SECRET, "SHOP_SMTP_PORT": str(self.smtp_port)}
        self.log_path = tmp / f"shop-{port}.log"
        self.proc: Optional[subprocess.Popen] = None

    def run_command(self, *args: str, stdin: str = "") -> str:
        out = subprocess.run([sys.executable, str(SHOP / "run_shop.py"), *args], env=self.env, input=stdin,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    def start(self) -> "ShopProcess":
        """Start the shop and its SMTP server; wait until the login page answers."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(SHOP / "run_shop.py"), "--port", str(self.port),
                                      "--smtp-port", str(self.smtp_port), "--mailbox", self.mailbox],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the shop exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the shop did not start:\n{self.log()}")

    def messages(self) -> list:
        """The emails the shop's SMTP server has stored so far."""
        if not os.path.exists(self.mailbox):
            return []
        box = mailbox.mbox(self.mailbox)
        try:
            return list(box)
        finally:
            box.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_squall_for_shop(tmp: Path, shop_port: int, *extra: str) -> ServerProcess:
    """Squall in external mode trusting the shop's tokens and its origin; ``extra`` adds options."""
    return start_server(tmp, "--auth-mode", "external", "--external-jwt-secret", JWT_SECRET,
                        "--external-jwt-issuer", JWT_ISSUER, "--external-jwt-audience", JWT_AUDIENCE,
                        "--allowed-origin", f"http://127.0.0.1:{shop_port}", *extra,
                        DATABASE_URL=f"sqlite:///{tmp}/squall.db", SERVICE_TOKEN=SERVICE_TOKEN)


def start_shop(tmp: Path, shop_port: int, squall_url: str) -> ShopProcess:
    """The shop with one staff member (``STAFF``: email, name, password), started."""
    shop = ShopProcess(tmp, shop_port, squall_url)
    email, name, password = STAFF
    shop.run_command("add-user", "--email", email, "--name", name, "--staff", stdin=password + "\n")
    return shop.start()
