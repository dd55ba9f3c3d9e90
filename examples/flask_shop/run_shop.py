"""Run the shop: its local SMTP server (aiosmtpd, writing every email into an mbox file) and the
Flask app, on 127.0.0.1.

    python examples/flask_shop/run_shop.py --port 5000 --smtp-port 8025 --mailbox mailbox.mbox
    python examples/flask_shop/run_shop.py add-user --email staff@shop.test --name "Sam (support)" --staff \
        < password.txt      # the password on standard input, never on the command line

The configuration comes from the environment (shop.ShopConfig.from_env; README.md,
"Embed Squall in your app").
"""
from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import os
import sys
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import squall_client  # noqa: F401  (pip install ./clients/python)
except ImportError:  # run from a checkout without installing it: use the repository's copy
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "clients", "python", "src"))

from aiosmtpd.controller import Controller  # noqa: E402

from shop import ShopConfig, add_user, connect, create_app  # noqa: E402


class MboxHandler:
    """aiosmtpd handler: each message accepted is appended to one mbox file (the "inbox" of every user)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store the message; 250 when it is in the file."""
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self._lock:
            box = mailbox.mbox(self.path)
            box.lock()
            try:
                box.add(message)
                box.flush()
            finally:
                box.unlock()
                box.close()
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The Flask shop that embeds Squall")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "add-user"])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--smtp-port", type=int, default=None, help="run the local SMTP server on this port")
    parser.add_argument("--mailbox", default=os.path.join(HERE, "mailbox.mbox"))
    parser.add_argument("--email")
    parser.add_argument("--name")
    parser.add_argument("--staff", action="store_true")
    args = parser.parse_args(argv)
    config = ShopConfig.from_env()
    if args.command == "add-user":
        password = sys.stdin.readline().rstrip("\n")
        user_id = add_user(connect(config.database), args.email or "", args.name or "", password, args.staff)
        print(f"user {user_id} added")
        return
    smtp = None
    if args.smtp_port is not None:
        smtp = Controller(MboxHandler(args.mailbox), hostname="127.0.0.1", port=args.smtp_port)
        smtp.start()
    try:
        create_app(config).run(host="127.0.0.1", port=args.port, threaded=True)
    finally:
        if smtp is not None:
            smtp.stop()


if __name__ == "__main__":
    main()
