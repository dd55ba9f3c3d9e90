"""docs/security.md exists and covers every session setting, each of which is in the README
configuration table (issue 10, acceptance 11)."""
import os

from tornado_app.config import _OPTIONS, Config
from tests.support.procs import ROOT

SESSION_FIELDS = ["token_ttl", "refresh_ttl", "ticket_ttl", "token_expiring_notice", "jwt_secret",
                  "jwt_secret_previous", "trusted_proxies", "login_failures_per_minute",
                  "login_failures_per_address_per_minute", "registrations_per_address_per_minute",
                  "hash_threads", "hash_queue", "hash_per_address", "password_hash_profile",
                  "logins_per_address_per_minute", "refreshes_per_address_per_minute",
                  "refreshes_per_session_per_minute", "refresh_reuse_window"]


def read(*path) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_every_session_flag_is_documented_with_its_default():
    readme, security = read("README.md"), read("docs", "security.md")
    options = {name: env for name, env, _, _ in _OPTIONS}
    defaults = Config()
    for name in SESSION_FIELDS:
        flag, env = "--" + name.replace("_", "-"), options[name]
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{flag}`")), None)
        assert row is not None and f"`{env}`" in row, name
        assert f"`{flag}`" in security and f"`{env}`" in security, name
        default = getattr(defaults, name)
        if isinstance(default, int) and not isinstance(default, bool):
            assert f"`{default}`" in row, (name, row)
    for flag in ("--cookie-secure", "--allowed-origin"):
        assert f"| `{flag}`" in readme and f"`{flag}`" in security
    for section in ("## Threat model", "## Session lifecycle", "## Behind TLS and a reverse proxy",
                    "## Rotating `JWT_SECRET`"):
        assert section in security
    assert "docs/security.md" in readme
