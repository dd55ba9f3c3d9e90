"""External tokens: access tokens minted by the host product's backend (issue 22, docs/integration.md).

``--auth-mode external`` or ``both``. A token is verified with PyJWT against one key source:
an HMAC secret (HS256/384/512), a PEM public key file (RS*, PS*, ES*, EdDSA) or a JWKS URL
(parsed by PyJWT's ``PyJWKSet``). The algorithm allowlist is fixed at start-up and never holds
``none``; HMAC algorithms go only with the secret and asymmetric ones only with keys, so a
token "signed" with the public key as an HMAC secret is refused before any key is used.

JWKS: the keys are cached by ``kid``. A token with an unknown ``kid`` makes one fetch of the
set, at most once per ``external_jwks_min_refetch`` seconds however many such tokens arrive
(concurrent misses share the fetch). The fetch is Squall's own (http.client on a thread; a
redirect or any status but 200 is a failure): the whole of it, connecting and reading included, ends within
``external_jwks_timeout`` seconds, and a body over ``JWKS_MAX_BYTES`` (1 MiB) is refused; a
failed, slow or oversize fetch leaves the cached keys in use (logged with the HTTP status and the
URL's host only). A ``kid`` still unknown after it is 401 ``unknown_key``.

Claims: ``iss``, ``aud``, ``exp`` and ``sub`` are required (``nbf`` and ``iat`` honoured when
present), with ``external_jwt_leeway`` seconds of clock skew. ``sub`` (1 to 255 characters, no
control characters) is the user's external id; ``name`` and ``picture`` set the display name
and avatar. A bad optional profile claim (a ``name`` with control characters or over 64
characters, a ``picture`` that is not an http(s) URL) is ignored: the token is accepted and the
profile keeps its current value.

Every refusal is a 401 with its own code (docs/integration.md "Errors"): ``token_too_large``,
``invalid_token``, ``invalid_algorithm``, ``unknown_key``, ``missing_claim``, ``token_expired``,
``token_not_yet_valid``, ``invalid_issuer``, ``invalid_audience``, ``invalid_subject``,
``token_revoked`` (users.revoked_at), ``account_disabled``, ``account_deleted``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import http.client
import math
import socket
import ssl
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWKSet

from ...errors import Unauthorized, ValidationError
from ...tasks import spawn
from .auth import Claims
from .users import ACCOUNT_DELETED, UserService, check_avatar_url, check_external_id, external_display_name

if TYPE_CHECKING:
    from ...config import Config

log = logging.getLogger("squall.external_auth")

MODES = ("builtin", "external", "both")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MIN_SECRET = 32
LEEWAY_MAX = 300.0
REFETCH_BOUNDS = (1.0, 86400.0)
TIMEOUT_BOUNDS = (0.5, 30.0)
TOKEN_BYTES_BOUNDS = (1024, 65536)
JWKS_MAX_BYTES = 1024 * 1024  # the largest JWKS body accepted (docs/integration.md)
SESSION_PREFIX = "ext:"  # sid of an external token: "ext:" + 28 hex digits of SHA-256 of the token (32 characters,
# the width of a session family: a logged-out external token is kept as a revoked refresh_token row)


def _b64json(segment: str):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def check_jwks_url(url: str) -> str:
    """``url`` if it is ``https://`` with a host, or ``http://`` on a loopback host. Raises ValueError."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(f"--external-jwks-url is not a valid URL: {url!r}") from None
    if not host or parts.username is not None or parts.password is not None:
        raise ValueError("--external-jwks-url needs a host and no credentials")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host.lower() == "localhost"
        if loopback:
            return url
        raise ValueError("--external-jwks-url must be https:// (http:// only on a loopback host)")
    raise ValueError("--external-jwks-url must be an https:// URL")


def _key_algorithms(key: object) -> Tuple[str, ...]:
    """The algorithms a PEM public key signs with."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError("--external-jwt-public-key: only the P-256 curve (ES256) is supported")
        return ("ES256",)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    raise ValueError("--external-jwt-public-key must be an RSA, EC P-256 or Ed25519 public key")


def _size(token: str) -> int:
    """The size of ``token`` in UTF-8 bytes (what the limit counts, on HTTP and in a WebSocket frame)."""
    return len(token.encode("utf-8", "surrogatepass"))


class JwksTooLarge(ValueError):
    """The JWKS body is over ``JWKS_MAX_BYTES``."""


def _shutdown(sock) -> None:
    """End a JWKS fetch at its deadline: a blocked read returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@dataclass(frozen=True)
class ExternalSettings:
    """What ``ExternalAuth.check_config`` read from the options (one key source: secret, public key or JWKS URL)."""

    mode: str
    issuer: str
    audience: str
    algorithms: Tuple[str, ...]
    leeway: float
    max_token_bytes: int
    secret: str = ""
    public_key: object = None  # a cryptography public key read from --external-jwt-public-key
    jwks_url: str = ""
    min_refetch: float = 60.0
    timeout: float = 5.0


class ExternalAuth:
    """Verifies the product's tokens; turns them into Squall's ``Claims`` (provisioning the user)."""

    def __init__(self, settings: ExternalSettings, users: UserService):
        self.mode = settings.mode
        self.issuer, self.audience = settings.issuer, settings.audience
        self.algorithms = list(settings.algorithms)
        self.leeway = settings.leeway
        self.max_token_bytes = settings.max_token_bytes
        self._static_key = settings.secret or settings.public_key  # None with a JWKS
        jwks_url = self.jwks_url = settings.jwks_url
        self.min_refetch = settings.min_refetch
        self.timeout = settings.timeout
        self._client = bool(jwks_url)  # True: keys come from a JWKS URL
        self.jwks_max_bytes = JWKS_MAX_BYTES
        self._keys: Dict[str, PyJWK] = {}  # kid -> key (asymmetric keys only)
        self._fetched_at: Optional[float] = None  # monotonic time of the last fetch attempt
        self._fetch: Optional[asyncio.Future] = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="squall-jwks") if jwks_url else None
        self.fetches = 0  # JWKS fetch attempts (tests, metrics)
        self.users = users  # provisions the product's users from their tokens
        self._subs: Dict[str, int] = {}  # external id -> user id (this process)

    # Configuration --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, users: UserService) -> Optional[ExternalAuth]:
        """The verifier of ``config`` (None in builtin mode). Raises ValueError with a clear message."""
        settings = cls.check_config(config)
        return None if settings is None else cls(settings, users)

    @staticmethod
    def check_config(config: Config) -> Optional[ExternalSettings]:
        """The settings of the verifier of ``config`` (None in builtin mode).

        Raises ValueError with a clear message (``parse_args`` checks the options with it).
        """
        mode = config.auth_mode
        if mode not in MODES:
            raise ValueError("--auth-mode must be builtin, external or both")
        sources = [name for name, value in (("--external-jwt-secret", config.external_jwt_secret),
                                            ("--external-jwks-url", config.external_jwks_url),
                                            ("--external-jwt-public-key", config.external_jwt_public_key))
                   if value]
        if mode == "builtin":
            if sources or config.external_jwt_issuer or config.external_jwt_audience or config.external_jwt_algorithms:
                raise ValueError("the --external-* options need --auth-mode external or both")
            return None
        if len(sources) != 1:
            raise ValueError(f"--auth-mode {mode} needs exactly one of --external-jwt-secret, --external-jwks-url "
                             f"and --external-jwt-public-key (got {len(sources)}: {', '.join(sources) or 'none'})")
        if not config.external_jwt_issuer or not config.external_jwt_audience:
            raise ValueError(f"--auth-mode {mode} needs --external-jwt-issuer and --external-jwt-audience")
        if mode == "both" and config.external_jwt_issuer.startswith("squall:"):
            # in both mode an iss of squall:… marks Squall's own tokens: the product's would never get here
            raise ValueError("--external-jwt-issuer must not start with 'squall:' in --auth-mode both "
                             "(that prefix marks Squall's own tokens)")
        if not 0 <= config.external_jwt_leeway <= LEEWAY_MAX:
            raise ValueError(f"--external-jwt-leeway must be between 0 and {LEEWAY_MAX:g} seconds")
        if not REFETCH_BOUNDS[0] <= config.external_jwks_min_refetch <= REFETCH_BOUNDS[1]:
            raise ValueError("--external-jwks-min-refetch must be between %g and %g seconds" % REFETCH_BOUNDS)
        if not TIMEOUT_BOUNDS[0] <= config.external_jwks_timeout <= TIMEOUT_BOUNDS[1]:
            raise ValueError("--external-jwks-timeout must be between %g and %g seconds" % TIMEOUT_BOUNDS)
        if not TOKEN_BYTES_BOUNDS[0] <= config.external_max_token_bytes <= TOKEN_BYTES_BOUNDS[1]:
            raise ValueError("--external-max-token-bytes must be between %d and %d" % TOKEN_BYTES_BOUNDS)
        secret, public_key, jwks_url = config.external_jwt_secret, None, ""
        allowed: Tuple[str, ...]
        derived: Tuple[str, ...]
        if secret:
            if len(secret) < MIN_SECRET:
                raise ValueError(f"--external-jwt-secret must be at least {MIN_SECRET} characters")
            allowed, derived = HMAC_ALGORITHMS, ("HS256",)
        elif config.external_jwt_public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
            try:
                with open(config.external_jwt_public_key, "rb") as handle:
                    public_key = load_pem_public_key(handle.read())
            except OSError as exc:
                raise ValueError(f"--external-jwt-public-key: cannot read the file ({exc.strerror})") from None
            except ValueError:
                raise ValueError("--external-jwt-public-key: the file is not a PEM public key") from None
            derived = _key_algorithms(public_key)
            allowed = ASYMMETRIC_ALGORITHMS
        else:
            jwks_url = check_jwks_url(config.external_jwks_url)
            allowed, derived = ASYMMETRIC_ALGORITHMS, ("RS256", "ES256", "EdDSA")
        algorithms = tuple(config.external_jwt_algorithms) or derived
        wrong = [a for a in algorithms if a not in allowed]
        if wrong:
            kind = "the HMAC secret takes only HS256, HS384, HS512" if secret else \
                "public keys take only RS*, PS*, ES* and EdDSA (never none, never HMAC)"
            raise ValueError(f"--external-jwt-algorithms: {', '.join(wrong)} not allowed: {kind}")
        return ExternalSettings(mode, config.external_jwt_issuer, config.external_jwt_audience, algorithms,
                                config.external_jwt_leeway, config.external_max_token_bytes, secret=secret,
                                public_key=public_key, jwks_url=jwks_url,
                                min_refetch=config.external_jwks_min_refetch, timeout=config.external_jwks_timeout)

    # Which tokens are external ----------------------------------------------------------------

    def owns(self, token: str) -> bool:
        """True when ``token`` is to be verified here: every bearer token in ``external`` mode; in
        ``both`` mode every token that is not one of Squall's (whose ``iss`` is ``squall:…``).

        In ``both`` mode the unverified payload is read to tell the two apart; a token too
        long or whose payload is not JSON goes to Squall's check (the same 401 ``invalid_token``)
        unless it is over the external size limit (``token_too_large``).
        """
        if self.mode == "external" or _size(token) > self.max_token_bytes:
            return True
        try:
            body = _b64json(token.split(".")[1])
        except (IndexError, ValueError, UnicodeError, binascii.Error, RecursionError):
            return False
        if not isinstance(body, dict):
            return False
        iss = body.get("iss")
        return not (isinstance(iss, str) and iss.startswith("squall:"))

    # Verification -----------------------------------------------------------------------------

    def _header(self, token: str) -> dict:
        if _size(token) > self.max_token_bytes:
            raise Unauthorized(f"The access token is over {self.max_token_bytes} bytes", "token_too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("The access token is invalid", "invalid_token") from None
        if header.get("alg") not in self.algorithms:
            raise Unauthorized("The access token's algorithm is not accepted", "invalid_algorithm")
        return header

    def _key_for(self, header: dict):
        """The key that checks a token with ``header``; None when the JWKS must be fetched first."""
        if self._static_key is not None:
            return self._static_key
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if isinstance(kid, str) else None

    def verify_now(self, token: str) -> Optional[dict]:
        """The verified claims of ``token``, or None when its key needs a JWKS fetch. Raises Unauthorized."""
        header = self._header(token)
        key = self._key_for(header)
        if key is None:
            return None
        return self._decode(token, key)

    async def verify(self, token: str) -> dict:
        """The verified claims of ``token``, fetching the JWKS when its ``kid`` is unknown (rate limited)."""
        header = self._header(token)
        key = self._key_for(header)
        if key is None:
            await self.refetch()
            key = self._key_for(header)
            if key is None:
                raise Unauthorized("The access token's signing key is unknown", "unknown_key")
        return self._decode(token, key)

    def _decode(self, token: str, key) -> dict:
        try:
            claims = jwt.decode(token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired", "token_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The access token is not valid yet", "token_not_yet_valid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The access token has no '{exc.claim}' claim", "missing_claim") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The access token's issuer is not accepted", "invalid_issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The access token's audience is not accepted", "invalid_audience") from None
        except jwt.exceptions.InvalidSubjectError:
            raise Unauthorized("The access token's 'sub' must be a string of 1 to 255 characters",
                               "invalid_subject") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("The access token's algorithm is not accepted", "invalid_algorithm") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError, TypeError):
            raise Unauthorized("The access token is invalid", "invalid_token") from None
        try:
            check_external_id(claims.get("sub"))
        except ValidationError:
            raise Unauthorized("The access token's 'sub' must be a string of 1 to 255 characters",
                               "invalid_subject") from None
        iat = claims.get("iat")
        if iat is not None and (type(iat) not in (int, float)):
            raise Unauthorized("The access token's 'iat' must be a number", "invalid_token")
        return claims

    # JWKS -------------------------------------------------------------------------------------

    async def refetch(self) -> None:
        """Fetch the JWKS unless one was tried less than ``min_refetch`` seconds ago; concurrent callers
        share one fetch. A failed fetch keeps the cached keys."""
        if not self._client:
            return
        if self._fetch is not None:
            await asyncio.shield(self._fetch)
            return
        now = time.monotonic()
        if self._fetched_at is not None and now - self._fetched_at < self.min_refetch:
            return
        self._fetched_at = now
        self._fetch = spawn(self._fetch_keys(), name="external_auth.fetch_keys")
        try:
            await asyncio.shield(self._fetch)
        finally:
            self._fetch = None

    async def _fetch_keys(self) -> None:
        self.fetches += 1
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.timeout
        try:
            data = await asyncio.wait_for(loop.run_in_executor(self._pool, self._download, deadline),
                                          self.timeout)
            keys: Dict[str, PyJWK] = {}
            for key in PyJWKSet.from_dict(data).keys:
                # never an HMAC key from a JWKS (kty "oct"): asymmetric keys only
                if key.key_id and key.key_type != "oct" and key.algorithm_name in self.algorithms:
                    keys[key.key_id] = key
        except Exception as exc:  # down, slow, or serving garbage: keep the keys we have
            status = exc.code if isinstance(exc, urllib.error.HTTPError) else None
            if isinstance(exc, asyncio.TimeoutError):
                exc = TimeoutError()
            # the host only: a JWKS URL's path or query may carry a secret
            log.warning("JWKS fetch failed, keeping %d cached keys: %s (HTTP status %s, host %s)",
                        len(self._keys), type(exc).__name__, status if status is not None else "none",
                        urlsplit(self.jwks_url).hostname)
            return
        self._keys = keys
        log.info("JWKS fetched: %d keys", len(keys))

    def _download(self, deadline: float) -> dict:
        """GET the JWKS (on the pool thread): no redirects, over by ``deadline`` (a timer shuts the
        socket down then, so a server sending a byte now and then cannot hold the thread), at most
        ``jwks_max_bytes`` read. Raises on any failure (HTTPError for a status other than 200)."""
        parts = urlsplit(self.jwks_url)
        host = parts.hostname or ""  # never empty: check_jwks_url refused URLs without a host
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("JWKS fetch deadline")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=left, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=left)
        conn.connect()
        sock = conn.sock
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shutdown, (sock,))
        timer.daemon = True
        timer.start()
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "squall-jwks"})
            response = conn.getresponse()
            if response.status != 200:  # a redirect included: the configured URL is the only source
                raise urllib.error.HTTPError(self.jwks_url, response.status, response.reason, response.headers, None)
            length = response.getheader("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > self.jwks_max_bytes:
                raise JwksTooLarge()
            body = bytearray()
            while len(body) <= self.jwks_max_bytes:
                chunk = response.read(min(65536, self.jwks_max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > self.jwks_max_bytes:
                raise JwksTooLarge()
            if time.monotonic() >= deadline:
                raise TimeoutError("JWKS fetch deadline")
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError("JWKS fetch deadline") from None
            raise
        finally:
            timer.cancel()
            conn.close()
        data = json.loads(bytes(body))
        if not isinstance(data, dict):
            raise ValueError("the JWKS is not a JSON object")
        return data

    async def start(self) -> None:
        """Fetch the JWKS once (a failure is logged; tokens fetch again when needed)."""
        if self._client:
            await self.refetch()
            self._fetched_at = None if not self._keys else self._fetched_at

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # Claims and users ---------------------------------------------------------------------------

    @staticmethod
    def profile(claims: dict):
        """``(display_name, avatar_url)`` from ``name`` and ``picture``; a bad one is None (ignored)."""
        name, picture = claims.get("name"), claims.get("picture")
        try:
            name = external_display_name(name, claims["sub"]) if isinstance(name, str) and name.strip() else None
        except ValidationError:
            name = None
        try:
            picture = check_avatar_url(picture) if isinstance(picture, str) else None
        except ValidationError:
            picture = None
        return name, picture

    def claims_now(self, token: str) -> Optional[Claims]:
        """Squall ``Claims`` of an external token when everything is in memory (key, user, profile); else None.

        Raises Unauthorized for a bad token.
        """
        claims = self.verify_now(token)
        if claims is None:
            return None
        user_id = self._subs.get(claims["sub"])
        if user_id is None:
            return None
        cached = self.users.cached(user_id)
        if cached is None or self.users.refusal(user_id) == ACCOUNT_DELETED:
            return None  # unknown here, or deleted: upsert_external decides (a new user, or account_deleted)
        name, picture = self.profile(claims)
        if (name is not None and name != cached["display_name"]) or \
                (picture is not None and picture != cached.get("avatar_url")):
            return None  # the profile changed: upsert (async)
        return self._claims(token, claims, user_id)

    async def claims(self, token: str) -> Claims:
        """Squall ``Claims`` of an external token: verified (fetching keys if need be), the user
        provisioned or updated (other processes told of a change). Raises Unauthorized."""
        claims = await self.verify(token)
        name, picture = self.profile(claims)
        try:
            user, changed = await self.users.upsert_external(claims["sub"], display_name=name, avatar_url=picture,
                                                             issued_at=claims.get("iat") or 0)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if code == "user_deleted":
                raise Unauthorized("This account has been deleted", "account_deleted") from None
            raise
        if changed:
            await self.users.announce_changed(user["id"])
            await self.users.get(user["id"])
        self._subs[claims["sub"]] = user["id"]
        return self._claims(token, claims, user["id"])

    def _claims(self, token: str, claims: dict, user_id: int) -> Claims:
        revoked_at = self.users.revoked_at(user_id)
        if revoked_at is not None:
            iat = claims.get("iat")
            # revoked_at is whole seconds: a token issued within that second (iat 12.2, revoked
            # at 12.8 stored as 12) is as old as the revocation
            if iat is None or math.floor(iat) <= revoked_at:
                raise Unauthorized("This token was revoked", "token_revoked")
        sid = SESSION_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:28]
        version = self.users.token_version(user_id)
        jti = claims.get("jti")
        return Claims(user_id, sid, version if version is not None else 0, int(claims["exp"]),
                      jti if isinstance(jti, str) else sid)
