"""squall_client (clients/python) for the tests: imported from the repository's copy, and the
settings of an external-mode server whose tokens the tests mint with it."""
from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python"
if str(PACKAGE / "src") not in sys.path:
    sys.path.insert(0, str(PACKAGE / "src"))

import squall_client  # noqa: E402

SECRET = "shop-jwt-secret-" + "s" * 32
ISSUER = "https://shop.test"
AUDIENCE = "squall"
SERVICE_TOKEN = "test-service-token"
# run.py's options for external mode with these settings
EXTERNAL = ("--auth-mode", "external", "--external-jwt-secret", SECRET, "--external-jwt-issuer", ISSUER,
            "--external-jwt-audience", AUDIENCE)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def mint(sub: str, **claims: Any) -> str:
    """A token of ``sub`` that a server started with ``EXTERNAL`` accepts."""
    return squall_client.mint_token(sub, secret=SECRET, issuer=ISSUER, audience=AUDIENCE, **claims)
