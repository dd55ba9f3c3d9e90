"""Passwords (argon2id, off the event loop) and access tokens (JWT HS256)."""
from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import Unauthorized

ALGORITHM = "HS256"


class AuthService:
    """Hashes and checks passwords, issues and verifies tokens."""

    def __init__(self, secret: str, token_ttl: int, service_token: str = "", profile: str = "standard"):
        if not secret:
            raise ValueError("a JWT secret is required")
        self.secret = secret
        self.token_ttl = token_ttl
        self.service_token = service_token
        if profile == "fast":  # tests and benchmarks create thousands of users
            self._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        elif profile == "standard":
            self._hasher = PasswordHasher()
        else:
            raise ValueError(f"unknown password hash profile {profile!r}")
        # argon2 releases the GIL, so hashing in threads keeps the loop free
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="squall-argon2")
        self._dummy_hash = self._hasher.hash("squall-dummy-password")

    async def hash_password(self, password: str) -> str:
        """The argon2id hash of ``password`` (computed on a worker thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hasher.hash, password)

    async def verify_password(self, password_hash: Optional[str], password: str) -> bool:
        """True when ``password`` matches; an unknown user (None) costs the same time as a known one."""
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(password_hash)
            except (VerificationError, InvalidHashError):
                return False
        return await asyncio.get_running_loop().run_in_executor(self._pool, check)

    def issue_token(self, user_id: int) -> str:
        """A signed access token for ``user_id``, valid for ``token_ttl`` seconds."""
        now = int(time.time())
        return jwt.encode({"sub": str(user_id), "iat": now, "exp": now + self.token_ttl},
                          self.secret, algorithm=ALGORITHM)

    def verify_token(self, token: Optional[str]) -> int:
        """The user id of a valid token. Raises Unauthorized (absent, bad, expired)."""
        if not token:
            raise Unauthorized("Authentication required: send a bearer token", "unauthorized")
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired", "token_expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("The access token is invalid", "invalid_token") from None
        try:
            return int(claims["sub"])
        except (TypeError, ValueError):
            raise Unauthorized("The access token is invalid", "invalid_token") from None

    def is_service_token(self, token: Optional[str]) -> bool:
        """True when ``token`` is the configured service token (constant-time compare)."""
        return bool(self.service_token and token) and hmac.compare_digest(
            self.service_token.encode(), token.encode())

    def close(self) -> None:
        """Stop the hashing threads."""
        self._pool.shutdown(wait=False)
