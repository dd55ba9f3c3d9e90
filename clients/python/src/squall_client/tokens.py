"""``mint_token``: a Squall token for one of the product's users, signed with the shared HMAC secret.

Squall in ``--auth-mode external`` (or ``both``) with ``--external-jwt-secret`` verifies it
and creates the user on first sight (docs/integration.md, "Token claims"). Mint short-lived
tokens (minutes) for the signed-in user's page; the first one of a new ``sub`` creates the user.
"""
from __future__ import annotations

import time
import unicodedata
import uuid
from typing import Any

import jwt

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_LENGTH = 32  # Squall refuses to start with a shorter --external-jwt-secret
MAX_SUBJECT_LENGTH = 255
DEFAULT_TTL = 300  # seconds


def _check_subject(sub: str) -> None:
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUBJECT_LENGTH:
        raise ValueError(f"sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in sub):
        raise ValueError("sub must not contain control characters")


def mint_token(sub: str, *, secret: str, issuer: str, audience: str, name: str | None = None,
               picture: str | None = None, ttl: int = DEFAULT_TTL, algorithm: str = "HS256",
               now: float | None = None) -> str:
    """A JWT with ``iss``, ``aud``, ``sub``, ``iat``, ``exp`` (``iat`` + ``ttl``), ``jti`` and, when
    given, ``name`` (display name) and ``picture`` (an ``http(s)`` avatar URL).

    ``issuer`` and ``audience`` must be the server's ``--external-jwt-issuer`` and
    ``--external-jwt-audience`` (Squall refuses a token without them, ``missing_claim``).
    ``iat`` matters: after a revoke, only tokens issued in a later second are accepted.
    Raises ``ValueError`` for a ``sub`` Squall would refuse (1-255 characters, no control
    characters), a secret under 32 characters, a ``ttl`` under 1 second or a non-HMAC algorithm.
    """
    _check_subject(sub)
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the secret must be at least {MIN_SECRET_LENGTH} characters")
    if algorithm not in HMAC_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(HMAC_ALGORITHMS)}")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise ValueError("ttl is a whole number of seconds, at least 1")
    if not issuer or not audience:
        raise ValueError("issuer and audience are required (the server's --external-jwt-issuer/-audience)")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": sub, "iat": issued, "exp": issued + ttl,
                              "jti": uuid.uuid4().hex}
    if name is not None:
        claims["name"] = name
    if picture is not None:
        claims["picture"] = picture
    return jwt.encode(claims, secret, algorithm=algorithm)


class TokenMinter:
    """``mint_token`` with the secret, issuer and audience set once: ``minter.mint("u-42", name="Dana")``."""

    def __init__(self, *, secret: str, issuer: str, audience: str, ttl: int = DEFAULT_TTL,
                 algorithm: str = "HS256") -> None:
        self.secret, self.issuer, self.audience = secret, issuer, audience
        self.ttl, self.algorithm = ttl, algorithm
        mint_token("probe", secret=secret, issuer=issuer, audience=audience, ttl=ttl, algorithm=algorithm)

    def mint(self, sub: str, *, name: str | None = None, picture: str | None = None, ttl: int | None = None) -> str:
        """A token for ``sub`` (the configured ``ttl`` unless given)."""
        return mint_token(sub, secret=self.secret, issuer=self.issuer, audience=self.audience, name=name,
                          picture=picture, ttl=self.ttl if ttl is None else ttl, algorithm=self.algorithm)
