"""Passwords (argon2id in a bounded pool, off the event loop) and signed tokens (JWT HS256).

Three kinds of JWT, told apart by ``typ`` so that one is never accepted as another:

    access   {"typ": "access", "sub", "sid", "jti", "ver", "iss", "iat", "nbf", "exp"}
    ticket   {"typ": "ticket", "sub", "sid", "jti", "ver", "iss", "iat", "nbf", "exp", "aex"}
             (single use, ``aex``: the expiry of the access token that asked for it)

``iss`` is ``squall:<installation id>`` (stored in the database: a token of another database
is refused), ``ver`` the user's token version (a re-created user id or "log out everywhere"
changes it), ``sid`` the session (refresh-token family) that revocation is keyed by.
Refresh tokens are opaque random strings, not JWTs (see services/identity/sessions.py).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ...errors import Forbidden, RateLimited, ServerBusy, Unauthorized
from ..operations.ratelimit import RateLimiter, address_key

ALGORITHM = "HS256"
ACCESS = "access"
TICKET = "ticket"
_REQUIRED = ["exp", "iat", "nbf", "sub", "sid", "jti", "ver", "iss", "typ"]
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}  # what PyJWT writes for the tokens Squall issues


def _b64decode(text: str) -> bytes:
    """Base64url without padding (JWT segments); raises binascii.Error / ValueError."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Claims:
    """What a verified access token or ticket says."""

    __slots__ = ("user_id", "sid", "version", "exp", "jti")

    def __init__(self, user_id: int, sid: str, version: int, exp: int, jti: str):
        self.user_id, self.sid, self.version, self.exp, self.jti = user_id, sid, version, exp, jti


class AuthService:
    """Hashes and checks passwords (bounded), issues and verifies access tokens and tickets."""

    def __init__(self, secret: str, token_ttl: int, service_token: str = "", profile: str = "standard",
                 previous_secret: str = "", ticket_ttl: int = 30, hash_threads: int = 2,
                 hash_queue: int = 16, hash_per_address: int = 2,
                 service_token_failures_per_minute: int = 10):
        self.use_secret(secret)
        # Wrong service tokens per client address (a token bucket): past it, every attempt from
        # that address (even with the right token) is 429 until the bucket refills.
        self._service_failures = RateLimiter(service_token_failures_per_minute / 60.0,
                                             service_token_failures_per_minute)
        self.previous_secret = previous_secret
        self.token_ttl = token_ttl
        self.ticket_ttl = ticket_ttl
        self.service_token = service_token
        self.issuer = "squall:unset"  # set by SessionService.start from the database
        if profile == "fast":  # tests and benchmarks create thousands of users
            self._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        elif profile == "standard":
            self._hasher = PasswordHasher()
        else:
            raise ValueError(f"unknown password hash profile {profile!r}")
        # argon2 releases the GIL, so hashing in threads keeps the loop free. The pool is
        # bounded: past ``hash_threads + hash_queue`` hashes in flight (or ``hash_per_address``
        # from one client address) a login is refused at once with 503 instead of queueing,
        # so a flood of bad passwords cannot make a good login wait.
        self._pool = ThreadPoolExecutor(hash_threads, thread_name_prefix="squall-argon2")
        self._hash_capacity = hash_threads + hash_queue
        self._hash_per_address = hash_per_address
        self._hashing = 0
        self._hashing_by_address: Dict[str, int] = {}
        self._dummy_hash = self._hasher.hash("squall-dummy-password")

    def use_secret(self, secret: str) -> None:
        """Sign and check tokens with ``secret`` from now on (the database's, once services start)."""
        if not secret:
            raise ValueError("a JWT secret is required")
        self.secret = secret
        self._key = secret.encode("utf-8")

    # Passwords --------------------------------------------------------------------------------

    async def _in_pool(self, address: Optional[str], fn, *args):
        """Run ``fn`` on a hashing thread. Raises ServerBusy when the pool or the address (``address_key``) is full."""
        address = address_key(address)
        per_address = 0 if address is None else self._hashing_by_address.get(address, 0)
        if self._hashing >= self._hash_capacity or (address is not None and per_address >= self._hash_per_address):
            raise ServerBusy("Too many sign-ins are being checked right now; try again in a second",
                             retry_after=1)
        self._hashing += 1
        if address is not None:
            self._hashing_by_address[address] = per_address + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._hashing -= 1
            if address is not None:
                left = self._hashing_by_address[address] - 1
                if left:
                    self._hashing_by_address[address] = left
                else:
                    del self._hashing_by_address[address]

    async def hash_password(self, password: str, address: Optional[str] = None) -> str:
        """The argon2id hash of ``password`` (on a worker thread). Raises ServerBusy."""
        return await self._in_pool(address, self._hasher.hash, password)

    async def verify_password(self, password_hash: Optional[str], password: str,
                              address: Optional[str] = None) -> bool:
        """True when ``password`` matches; an unknown user (None) costs the same. Raises ServerBusy."""
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(password_hash)
            except (VerificationError, InvalidHashError):
                return False
        return await self._in_pool(address, check)

    # Tokens ---------------------------------------------------------------------------------

    def issue_access(self, user_id: int, sid: str, version: int):
        """``(token, exp)``: a signed access token of session ``sid``, valid ``token_ttl`` seconds."""
        now = int(time.time())
        exp = now + self.token_ttl
        claims = {"typ": ACCESS, "sub": str(user_id), "sid": sid, "jti": secrets.token_urlsafe(9),
                  "ver": version, "iss": self.issuer, "iat": now, "nbf": now, "exp": exp}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), exp

    def issue_ticket(self, claims: Claims) -> str:
        """A single-use stream ticket for the session of ``claims`` (valid ``ticket_ttl`` seconds)."""
        now = int(time.time())
        body = {"typ": TICKET, "sub": str(claims.user_id), "sid": claims.sid, "jti": secrets.token_urlsafe(12),
                "ver": claims.version, "iss": self.issuer, "iat": now, "nbf": now,
                "exp": min(now + self.ticket_ttl, claims.exp), "aex": claims.exp}
        return jwt.encode(body, self.secret, algorithm=ALGORITHM)

    def verify_access(self, token: Optional[str]) -> Claims:
        """The claims of a valid access token. Raises Unauthorized (absent, bad, expired, wrong kind)."""
        if not token:
            raise Unauthorized("Authentication required: send a bearer token", "unauthorized")
        return self._verify(token, ACCESS, "invalid_token", "The access token")

    def verify_ticket(self, ticket: str) -> Claims:
        """The claims of a valid ticket (single use is SessionService's). Raises Unauthorized invalid_ticket."""
        return self._verify(ticket, TICKET, "invalid_ticket", "The stream ticket")

    def _fast_claims(self, token: str) -> Optional[dict]:
        """The claims of a valid token in the exact shape Squall issues, checked without PyJWT; else None.

        A handshake storm verifies thousands of tokens a second, and PyJWT's generic path
        costs several times this one. Only the success case is decided here: an HS256
        token with the header Squall writes, signed with the current secret, every
        required claim present, integer ``nbf`` and ``iat`` not in the future and ``exp``
        after now. Anything
        else (a bad signature, the previous secret, an expired token, another header)
        returns None and goes through PyJWT, which gives the precise error.
        """
        try:
            head, body, signature = token.split(".")
            signed = hmac.new(self._key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(signed, _b64decode(signature)):
                return None
            if json.loads(_b64decode(head)) != _HEADER:
                return None
            claims = json.loads(_b64decode(body))
        except (ValueError, UnicodeError, binascii.Error, RecursionError):
            return None
        if not isinstance(claims, dict) or not all(name in claims for name in _REQUIRED):
            return None
        exp, nbf, iat = claims["exp"], claims["nbf"], claims["iat"]
        if type(exp) is not int or type(nbf) is not int or type(iat) is not int:
            return None
        now = time.time()
        if not (nbf <= now and iat <= now < exp):
            return None
        return claims

    def _decode(self, token: str) -> dict:
        claims = self._fast_claims(token)
        if claims is not None:
            return claims
        try:
            return jwt.decode(token, self.secret, algorithms=[ALGORITHM], options={"require": _REQUIRED})
        except jwt.InvalidSignatureError:
            if not self.previous_secret:
                raise
            # JWT_SECRET rotation: tokens signed with the previous secret keep working until they expire.
            return jwt.decode(token, self.previous_secret, algorithms=[ALGORITHM], options={"require": _REQUIRED})

    def _verify(self, token: str, typ: str, code: str, what: str) -> Claims:
        try:
            claims = self._decode(token)
        except jwt.ExpiredSignatureError:
            if typ == TICKET:
                raise Unauthorized("The stream ticket has expired", code) from None
            raise Unauthorized(f"{what} has expired", "token_expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized(f"{what} is invalid", code) from None
        if claims.get("typ") != typ or claims.get("iss") != self.issuer:
            raise Unauthorized(f"{what} is invalid", code)
        try:
            exp = int(claims["aex"]) if typ == TICKET else int(claims["exp"])
            return Claims(int(claims["sub"]), str(claims["sid"]), int(claims["ver"]), exp, str(claims["jti"]))
        except (TypeError, ValueError, KeyError):
            raise Unauthorized(f"{what} is invalid", code) from None

    def is_service_token(self, token: Optional[str]) -> bool:
        """True when ``token`` is the configured service token (constant-time compare)."""
        if not self.service_token or not token:
            return False
        return hmac.compare_digest(self.service_token.encode(), token.encode())

    def check_service_token(self, token: Optional[str], address: Optional[str]) -> None:
        """Accept ``token`` if it is the service token, else count a failure of ``address``.

        Raises Forbidden ``invalid_service_token``; RateLimited (429, ``retry_after``) while
        ``address`` (IPv6: its /64) has used up its failed attempts, whatever the token.
        """
        key = address_key(address)
        if not self._service_failures.has_tokens(key):
            raise RateLimited("Too many wrong service tokens from this address; try again later",
                              retry_after=self._service_failures.retry_after(key))
        if not self.is_service_token(token):
            self._service_failures.allow(key)
            raise Forbidden("A valid service token is required", "invalid_service_token")

    def close(self) -> None:
        """Stop the hashing threads."""
        self._pool.shutdown(wait=False)
