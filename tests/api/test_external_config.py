"""The --auth-mode and --external-* options (issue 22 item 1): start-up errors, and every limit at
and just past its bound."""
from __future__ import annotations

import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tornado_app.config import Config, load_config
from tornado_app.errors import Unauthorized
from tornado_app.services.identity.external_auth import ExternalAuth

SECRET = "k" * 32
BASE = ["--auth-mode", "external", "--external-jwt-issuer", "https://p.example", "--external-jwt-audience", "squall"]


def load(*argv, environ=None):
    return load_config(list(argv), environ or {})[1]


def refused(*argv, environ=None) -> str:
    with pytest.raises(SystemExit) as info:
        load(*argv, environ=environ)
    return str(info.value)


@pytest.fixture
def rsa_pem(tmp_path):
    path = tmp_path / "rsa.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path), key


def test_builtin_is_the_default_and_has_no_verifier():
    config = load()
    assert config.auth_mode == "builtin" and ExternalAuth.from_config(config, users=None) is None
    assert "need --auth-mode external or both" in refused("--external-jwt-secret", SECRET)


def test_mode_and_key_sources(rsa_pem):
    assert "must be builtin, external or both" in refused("--auth-mode", "mixed")
    assert "exactly one of" in refused(*BASE)
    assert "got 2" in refused(*BASE, "--external-jwt-secret", SECRET, "--external-jwt-public-key", rsa_pem[0])
    assert "--external-jwt-issuer and --external-jwt-audience" in refused(
        "--auth-mode", "both", "--external-jwt-secret", SECRET, "--external-jwt-issuer", "https://p.example")
    assert "--external-jwt-issuer and --external-jwt-audience" in refused(
        "--auth-mode", "both", "--external-jwt-secret", SECRET, "--external-jwt-audience", "squall")
    config = load(*BASE, "--external-jwt-secret", SECRET)
    assert ExternalAuth.from_config(config, users=None).algorithms == ["HS256"]
    # the environment works as the flags do
    config = load(environ={"AUTH_MODE": "both", "EXTERNAL_JWT_SECRET": SECRET, "EXTERNAL_JWT_ISSUER": "i",
                           "EXTERNAL_JWT_AUDIENCE": "a", "EXTERNAL_JWT_ALGORITHMS": "HS256,HS512"})
    assert config.auth_mode == "both" and config.external_jwt_algorithms == ("HS256", "HS512")


def test_hmac_secret_length():
    assert "at least 32 characters" in refused(*BASE, "--external-jwt-secret", "k" * 31)
    assert load(*BASE, "--external-jwt-secret", "k" * 32).external_jwt_secret == "k" * 32


def test_algorithm_allowlist_never_none_and_no_confusion(rsa_pem):
    pem = rsa_pem[0]
    for algs in ("none", "HS256", "RS256,HS256"):
        assert "not allowed" in refused(*BASE, "--external-jwt-public-key", pem, "--external-jwt-algorithms", algs)
    for algs in ("none", "RS256", "EdDSA"):
        assert "not allowed" in refused(*BASE, "--external-jwt-secret", SECRET, "--external-jwt-algorithms", algs)
    config = load(*BASE, "--external-jwt-public-key", pem, "--external-jwt-algorithms", "RS256,PS256")
    assert ExternalAuth.from_config(config, users=None).algorithms == ["RS256", "PS256"]
    assert ExternalAuth.from_config(load(*BASE, "--external-jwt-public-key", pem), users=None).algorithms == ["RS256"]


def test_public_key_file_errors(tmp_path):
    assert "cannot read the file" in refused(*BASE, "--external-jwt-public-key", str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert "not a PEM public key" in refused(*BASE, "--external-jwt-public-key", str(bad))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "P-256" in refused(*BASE, "--external-jwt-public-key", str(p384))


@pytest.mark.parametrize("url,ok", [
    ("https://id.example/.well-known/jwks.json", True),
    ("http://127.0.0.1:8080/jwks", True),
    ("http://[::1]:8080/jwks", True),
    ("http://localhost/jwks", True),
    ("http://id.example/jwks", False),  # plain http off the loopback
    ("http://10.0.0.1/jwks", False),
    ("ftp://id.example/jwks", False),
    ("https://user:pw@id.example/jwks", False),
    ("https://id.example:99999/jwks", False),
    ("https:///jwks", False),
])
def test_jwks_url(url, ok):
    argv = (*BASE, "--external-jwks-url", url)
    if ok:
        assert ExternalAuth.from_config(load(*argv), users=None).jwks_url == url
    else:
        assert "--external-jwks-url" in refused(*argv)


@pytest.mark.parametrize("flag,good,bad", [
    ("--external-jwt-leeway", ["0", "300"], ["-1", "300.5"]),
    ("--external-jwks-min-refetch", ["1", "86400"], ["0.9", "86401"]),
    ("--external-jwks-timeout", ["0.5", "30"], ["0.4", "30.1"]),
    ("--external-max-token-bytes", ["1024", "65536"], ["1023", "65537"]),
])
def test_limits_at_and_past_their_bounds(flag, good, bad):
    for value in good:
        load(*BASE, "--external-jwt-secret", SECRET, flag, value)
    for value in bad:
        assert flag in refused(*BASE, "--external-jwt-secret", SECRET, flag, value)


def _verifier(**changes) -> ExternalAuth:
    return ExternalAuth.from_config(Config(auth_mode="external", external_jwt_secret=SECRET,
                                           external_jwt_issuer="i", external_jwt_audience="a", **changes), users=None)


def test_token_size_limit_at_and_past():
    verifier = _verifier(external_max_token_bytes=2048)
    with pytest.raises(Unauthorized) as info:
        verifier.verify_now("a" * 2049)
    assert info.value.code == "token_too_large"
    with pytest.raises(Unauthorized) as info:
        verifier.verify_now("a" * 2048)  # read (and refused as malformed), not too large
    assert info.value.code == "invalid_token"


def test_token_size_counts_utf8_bytes():
    """The limit is in bytes: a non-ASCII token (as a WebSocket refresh frame may carry) of fewer
    characters than the limit but more bytes is too large; in both modes, before any parsing."""
    for mode in ("external", "both"):
        verifier = ExternalAuth.from_config(Config(auth_mode=mode, external_jwt_secret=SECRET, external_jwt_issuer="i",
                                                   external_jwt_audience="a", external_max_token_bytes=2048), users=None)
        at = "a." + "\u00e9" * 1022 + "aa"  # 1026 characters, 2048 UTF-8 bytes
        past = at + "a"  # 2049 bytes, 1027 characters
        assert len(past.encode()) == 2049 and len(past) < 2048
        assert verifier.owns(past)  # routed to the external check, which refuses it by size
        with pytest.raises(Unauthorized) as info:
            verifier.verify_now(past)
        assert info.value.code == "token_too_large"
        with pytest.raises(Unauthorized) as info:
            verifier.verify_now(at)  # read (and refused as malformed), not too large
        assert info.value.code == "invalid_token"


def test_both_mode_refuses_a_squall_issuer():
    """In both mode an iss of squall:… marks Squall's own tokens: the product's could never be checked."""
    message = refused("--auth-mode", "both", "--external-jwt-secret", SECRET, "--external-jwt-issuer", "squall:x",
                      "--external-jwt-audience", "squall")
    assert "--external-jwt-issuer must not start with 'squall:'" in message
    # external mode sends every token to the product's check: the prefix means nothing there
    load("--auth-mode", "external", "--external-jwt-secret", SECRET, "--external-jwt-issuer", "squall:x",
         "--external-jwt-audience", "squall")
    load("--auth-mode", "both", "--external-jwt-secret", SECRET, "--external-jwt-issuer", "https://squall:x",
         "--external-jwt-audience", "squall")


def test_leeway_at_and_past():
    now = int(time.time())

    def token(exp):
        return jwt.encode({"iss": "i", "aud": "a", "sub": "u", "exp": exp}, SECRET, algorithm="HS256")
    verifier = _verifier()  # 30 s by default
    assert verifier.leeway == 30.0
    assert verifier.verify_now(token(now - 25))["sub"] == "u"
    with pytest.raises(Unauthorized) as info:
        verifier.verify_now(token(now - 35))
    assert info.value.code == "token_expired"
    with pytest.raises(Unauthorized):
        _verifier(external_jwt_leeway=0.0).verify_now(token(now - 2))


def test_every_external_option_is_documented():
    """Each option has its README row (flag, variable, default), an operations.md row, and the
    codes are in docs/integration.md and docs/protocol.md."""
    from tornado_app.config import _OPTIONS
    from tests.support.procs import ROOT
    docs = {name: open(os.path.join(ROOT, name), encoding="utf-8").read() for name in ("README.md", "docs/operations.md", "docs/integration.md", "docs/protocol.md",
                         "docs/security.md")}
    defaults = Config()
    names = [(name, env) for name, env, _, _ in _OPTIONS if name == "auth_mode" or name.startswith("external_")]
    assert len(names) == 11
    for name, env in names:
        flag = "--" + name.replace("_", "-")
        for doc in ("README.md", "docs/operations.md"):
            row = next((line for line in docs[doc].splitlines() if line.startswith(f"| `{flag}`")), None)
            assert row is not None and f"`{env}`" in row, (doc, flag)
            default = getattr(defaults, name)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert f"`{default:g}`" in row, (doc, flag, row)
    for section in ("## Auth modes", "## Token claims", "## Keys and rotation", "## Errors"):
        assert section in docs["docs/integration.md"]
    for code in ("token_too_large", "invalid_algorithm", "unknown_key", "missing_claim", "token_expired",
                 "token_not_yet_valid", "invalid_issuer", "invalid_audience", "invalid_subject", "token_revoked",
                 "account_disabled", "account_deleted", "builtin_auth_disabled"):
        assert f"`{code}`" in docs["docs/integration.md"] and f"`{code}`" in docs["docs/protocol.md"], code
    assert "Algorithm confusion" in docs["docs/security.md"] and "SSRF" in docs["docs/security.md"]
