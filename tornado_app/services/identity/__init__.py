"""Identity: who is calling, and whether they still may.

- ``AuthService``: passwords (argon2id in a bounded pool) and Squall's own JWTs and tickets.
- ``ExternalAuth``: the product's tokens (HMAC, a public key file, or a JWKS URL), mapped to
  users provisioned just in time.
- ``UserService``: users, their cache, token versions, ``upsert_external``.
- ``SessionService``: refresh rotation, revocation everywhere, tickets, live-connection expiry.
  Its statements are in ``session_store`` (refresh-token families, revocations).
- ``UserDirectory``: who may find whom (``GET /api/users``).

Uses ``storage``, ``operations`` and ``delivery`` (revocations travel as control messages).
"""
from .auth import AuthService, Claims
from .directory import UserDirectory
from .external_auth import ExternalAuth
from .sessions import RefreshLimits, SessionService
from .users import UserService

__all__ = ["AuthService", "Claims", "UserDirectory", "ExternalAuth", "RefreshLimits", "SessionService",
           "UserService"]
