"""Handler base classes: JSON in and out, authentication at the door, one error shape."""
from __future__ import annotations

import functools
import inspect
import json
import logging
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlparse

import tornado.web

from tornado_app.cors import CorsPolicy, handler_methods
from tornado_app.errors import (BadJSON, DatabaseUnavailable, Forbidden, NotFound, PayloadTooLarge, SquallError,
                                Unauthorized, UnsupportedMediaType, ValidationError)
from tornado_app.services import Services
from tornado_app.services.storage.db import is_unavailable
from tornado_app.services.delivery.events import dumps
from tornado_app.services.storage.ids import MAX_ID, parse_int
from tornado_app.tornado_io import status_reason

from .headers import HeadLikeGet

log = logging.getLogger("squall.handlers")

# The mixins below are mixed into Tornado handlers (RequestHandler, WebSocketHandler); to the
# type checker they are handlers, at run time plain classes (the handler base comes later in
# each handler's bases, as Tornado expects).
if TYPE_CHECKING:
    HandlerMixinBase = tornado.web.RequestHandler
else:
    HandlerMixinBase = object

TOKEN_COOKIE = "squall_token"  # the access token for the pages (HttpOnly, SameSite=Strict, Path=/)
REFRESH_COOKIE = "squall_refresh"  # the refresh token (HttpOnly, SameSite=Strict, Path=/api/auth)
REFRESH_COOKIE_PATH = "/api/auth"
_UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 429: "rate_limited", 503: "unavailable"}


def public(method: Any) -> Any:
    """Mark a handler method as open to anyone (the route walk test checks every method is marked)."""
    return mark_access(method, "public")


def mark_access(method: Any, access: str) -> Any:
    """``method`` marked ``squall_access = access`` (public, user, admin, service; the route walk
    test reads it), e.g. a handler method checked in ``prepare`` rather than by a decorator."""
    method.squall_access = access
    return method


def _guarded(method, access: str, admins_only: bool = False):
    """``method`` behind the user-token check (and the admin check); marked ``squall_access = access``."""
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        self.authenticate()
        await self.require_known_user()
        if admins_only and not await self.services.users.is_admin(self.user_id):
            raise Forbidden("This needs an admin account", "admin_only")
        result = method(self, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    return mark_access(wrapper, access)


def authenticated(method):
    """Require a valid user token (header, ``access_token`` query or cookie); sets ``self.user_id``."""
    return _guarded(method, "user")


def service_only(method):
    """Require the configured service token; 403 when none is configured or it does not match."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self.services.config.service_token:
            raise Forbidden("The publish API is disabled: set SERVICE_TOKEN", "publish_disabled")
        # 403 invalid_service_token; 429 after SERVICE_TOKEN_FAILURES_PER_ADDRESS_PER_MINUTE wrong ones
        self.services.auth.check_service_token(self.bearer_token(), self.request.remote_ip)
        return method(self, *args, **kwargs)
    return mark_access(wrapper, "service")


def admin_only(method):
    """Require a user token of an admin (``python run.py admin grant USERNAME``); 403 ``admin_only`` otherwise."""
    return _guarded(method, "admin", admins_only=True)


def check_text(value) -> None:
    """Refuse strings no database stores: NUL characters and lone surrogates. Raises ValidationError.

    ``json.loads`` accepts ``"\\u0000"`` and ``"\\ud800"``; PostgreSQL rejects NUL in text and
    neither database can encode a lone surrogate, so such a string must stop at the door.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError("Text must be valid Unicode (no lone surrogates)", "invalid_text") from None
            if "\x00" in item:
                raise ValidationError("Text must not contain NUL characters", "invalid_text")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def client_error(exc: BaseException) -> Optional[SquallError]:
    """The error a client sees for ``exc``: itself if a SquallError, 503 ``database_unavailable``
    for a database that cannot be reached or stays locked; None for a bug (500)."""
    if isinstance(exc, SquallError):
        return exc
    if is_unavailable(exc):
        return DatabaseUnavailable("The database is unavailable; retry shortly", retry_after=2)
    if isinstance(exc, OverflowError):  # an integer no database stores: input that escaped validation
        return ValidationError("A number is out of range (1 to 2**63-1)")
    return None


def log_handler_exception(handler, typ, value, tb) -> None:
    """Log a handler's failure without the request dump (its URL may carry ``access_token``).

    Client errors are not logged here (the access log has the status); a database outage
    is one warning line; anything else is an error with the traceback, whose exception
    message the log formatter withholds (see tornado_app/logs.py).
    """
    known = client_error(value)
    request = handler.request
    if isinstance(known, DatabaseUnavailable):
        log.warning("database unavailable during %s %s (%s)", request.method, request.path, typ.__name__)
    elif known is None and not isinstance(value, tornado.web.HTTPError):
        log.error("uncaught %s in %s %s", typ.__name__, request.method, request.path, exc_info=(typ, value, tb))


def set_retry_after(handler, exc: SquallError) -> None:
    """Send ``Retry-After`` for an error that carries one (429 and 503 answers)."""
    if exc.retry_after is not None:
        handler.set_header("Retry-After", str(exc.retry_after))


def count_error(handler, code: str) -> None:
    """Count an error answered to a client; on a stream route it is also a refused handshake."""
    metrics = handler.application.settings["services"].hub.metrics
    metrics.error(code)
    transport = getattr(handler, "transport", None)
    if transport:
        metrics.handshake_refused(transport, code)


class ServicesMixin(HandlerMixinBase):
    """Reach the shared services and resolve the caller's identity (HTTP, WebSocket, SSE, polls alike)."""

    user_id: Optional[int] = None
    auth_source: Optional[str] = None
    # The session of the credential this request came with (streams keep it: logout and
    # expiry end them; see services/identity/sessions.py).
    sid: Optional[str] = None
    token_exp: Optional[int] = None
    token_warn_at: Optional[int] = None
    token_version: Optional[int] = None
    claims = None
    # True on the stream and long-poll routes (/ws/*, /sse/*, /poll/*): only they take a
    # ``?ticket=``. A ticket is a URL credential for what cannot send a header; accepted on
    # the API, it would be a second access token that rides in URLs.
    accepts_ticket = False

    @property
    def authenticated_user_id(self) -> int:
        """``user_id`` once the caller is authenticated (``authenticate``, ``require_known_user``).

        Raises Unauthorized before that, which a handler reached through ``@authenticated``
        or a stream's ``prepare`` never sees.
        """
        user_id = self.user_id
        if user_id is None:
            raise Unauthorized("Authentication required: send a bearer token", "unauthorized")
        return user_id

    @property
    def services(self) -> Services:
        """The process's services container."""
        return self.application.settings["services"]

    @property
    def cors(self) -> CorsPolicy:
        """The allowed origins (tornado_app/cors.py), built once by ``make_app``."""
        policy = self.application.settings.get("cors")
        if policy is None:  # an application make_app did not build
            config = self.services.config
            policy = CorsPolicy(config.allowed_origins, config.cors_max_age)
        return policy

    def log_exception(self, typ, value, tb) -> None:
        """Log a failure without Tornado's request dump (see ``log_handler_exception``)."""
        log_handler_exception(self, typ, value, tb)

    def bearer_token(self) -> Optional[str]:
        """The token of an ``Authorization: Bearer`` header, if any."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None

    def find_token(self):
        """``(token, source)`` from the header, the ``access_token`` query, or the login cookie."""
        token = self.bearer_token()
        if token:
            return token, "header"
        token = self.get_query_argument("access_token", None)
        if token:
            return token, "query"
        token = self.get_cookie(TOKEN_COOKIE)
        if token:
            return token, "cookie"
        return None, None

    def foreign_origin(self) -> bool:
        """True for a browser request from another site (``Origin`` or ``Sec-Fetch-Site``).

        This site is the request's own host; ``ALLOWED_ORIGINS`` are accepted too. A
        request without either header (curl, services, old browsers' same-origin GETs) is
        not foreign.
        """
        origin = self.request.headers.get("Origin")
        if origin is not None:
            if self.cors.allowed(origin):
                return False
            return urlparse(origin).netloc.lower() != self.request.host.lower()
        return self.request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"

    def check_json_request(self) -> None:
        """A state-changing request must be JSON and must not come from another site.

        A cross-site page can send ``text/plain`` or form posts without a preflight, with the
        victim's cookies; it cannot send ``application/json``. Raises UnsupportedMediaType
        (415), Forbidden ``csrf_rejected`` (403).
        """
        if self.request.method not in _UNSAFE_METHODS:
            return
        if self.foreign_origin():
            raise Forbidden("Requests from another site are not accepted", "csrf_rejected")
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise UnsupportedMediaType("Send the body as JSON with 'Content-Type: application/json'")

    def authenticate(self) -> Optional[int]:
        """Set and return ``self.user_id`` from a ticket, a bearer header, the query or the cookie.

        Checks the signature, kind, installation and expiry of the token, the single use of a
        ticket, and the revocation list (all in memory). Raises Unauthorized, Forbidden
        (cookie use from another site). None: an external token ``require_known_user`` settles.
        """
        if self.user_id is not None or self._external_token is not None:
            return self.user_id
        services = self.services
        ticket = self.get_query_argument("ticket", None)
        if ticket is not None:
            if not self.accepts_ticket:  # refused before it is spent: it may still open its stream
                raise Unauthorized("Stream tickets are accepted only on /ws/*, /sse/* and /poll/* routes",
                                   "invalid_ticket")
            claims, source = services.sessions.use_ticket(ticket), "ticket"
        else:
            token, source = self.find_token()
            external = services.external
            if external is not None and token and external.owns(token):
                # The product's token (--auth-mode external|both): verified here when its key and
                # user are in memory; else require_known_user finishes (JWKS fetch, provisioning).
                settled = external.claims_now(token)
                if settled is None:
                    if source == "cookie":
                        self._check_cookie_use()
                    self._external_token, self.auth_source = token, source
                    return None
                claims = services.sessions.check(settled)
            else:
                claims = services.sessions.check(services.auth.verify_access(token))
        if source == "cookie":
            self._check_cookie_use()
        self.claims = claims
        self.user_id, self.auth_source = claims.user_id, source
        self.sid, self.token_exp, self.token_version = claims.sid, claims.exp, claims.version
        return claims.user_id

    def _check_cookie_use(self) -> None:
        """A cookie rides along on cross-site requests: refuse them, streams included. Raises Forbidden."""
        if self.foreign_origin():
            raise Forbidden("Cookie-authenticated requests must come from this site", "csrf_rejected")
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and not self.request.headers.get("Origin"):
            raise Forbidden("Cookie-authenticated requests must come from this site", "csrf_rejected")

    _external_token: Optional[str] = None  # an external token authenticate() left to require_known_user

    async def require_known_user(self) -> None:
        """Refuse a well-signed token whose account is gone (``unknown_user``) or re-created / logged
        out everywhere (``invalid_token``: its token version is not the user's), or whose user is
        disabled or deleted (``account_disabled`` / ``account_deleted``).

        An external token not settled by ``authenticate()`` is verified here (fetching the JWKS
        when its ``kid`` is new) and its user provisioned or updated.
        """
        if self._external_token is not None:
            token, self._external_token = self._external_token, None
            external = self.services.external
            if external is None:  # never: only ExternalAuth.owns() leaves a token here
                raise Unauthorized("The access token is invalid", "invalid_token")
            try:
                claims = self.services.sessions.check(await external.claims(token))
            except Unauthorized:
                if self.accepts_ticket:  # a stream route: failures count against the address
                    self.services.admission.failed_auth(self.request.remote_ip)
                raise
            self.claims = claims
            self.user_id = claims.user_id
            self.sid, self.token_exp, self.token_version = claims.sid, claims.exp, claims.version
        if self.user_id is None or self.token_version is None:  # never after authenticate()
            raise Unauthorized("Authentication required: send a bearer token", "unauthorized")
        await self.services.users.check_version(self.user_id, self.token_version)


class CorsPreflight(ServicesMixin):
    """A mixin: ``OPTIONS`` answers a CORS preflight on ``/api/*``, ``/sse/*`` and ``/poll/*``.

    Public on purpose: a browser sends a preflight without credentials, and it changes
    nothing. It is not rate-limited (it costs no database, no hash, no stream slot) and is
    counted in the request metrics like any request. The CORS headers come from the policy
    (tornado_app/cors.py): only for a listed origin asking for a method this route
    implements. Elsewhere ``OPTIONS`` stays 405. Stream handlers, which authenticate in
    ``prepare``, skip that for a preflight (``is_preflight``).
    """

    def is_preflight(self) -> bool:
        """True for an ``OPTIONS`` request on a CORS route (its ``prepare`` must not ask for a credential)."""
        return self.request.method == "OPTIONS" and self.cors.applies(self.request.path)

    @public
    def options(self, *args, **kwargs):
        """204 with ``Allow`` and, for a listed origin, the preflight's CORS headers; 405 off the CORS routes."""
        if not self.cors.applies(self.request.path):
            raise tornado.web.HTTPError(405)
        methods = handler_methods(type(self))
        headers = self.request.headers
        for name, value in self.cors.preflight_headers(self.request.path, headers.get("Origin"),
                                                       headers.get("Access-Control-Request-Method"), methods):
            self.set_header(name, value)
        self.set_header("Allow", ", ".join(methods + ("OPTIONS",)))
        self.set_status(204)
        self.finish()


class BaseHandler(CorsPreflight, HeadLikeGet, ServicesMixin, tornado.web.RequestHandler):
    """JSON API handler: parses bodies, writes JSON, maps every error to one shape; HEAD where GET."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self):
        length = self.request.headers.get("Content-Length")
        limit = self.services.config.max_body_bytes
        if (length and length.isdigit() and int(length) > limit) or len(self.request.body or b"") > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes")
        if self.services.closing and self.request.method not in ("GET", "HEAD"):
            self.set_header("Connection", "close")
        self.check_json_request()

    def json_body(self) -> dict:
        """The request body as a JSON object. Raises BadJSON."""
        if not self.request.body:
            return {}
        try:
            text = self.request.body.decode("utf-8")
            body = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadJSON("The body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadJSON("The body must be a JSON object")
        if "\\u" in text:
            # Only an escape makes a NUL or a lone surrogate: strict UTF-8 refuses an encoded
            # surrogate and JSON a raw control character, so a body without one needs no walk.
            check_text(body)
        return body

    def int_argument(self, name: str, default: Optional[int] = None, minimum: int = 1,
                     maximum: Optional[int] = None) -> Optional[int]:
        """An integer query argument within bounds. Raises ValidationError."""
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        return parse_int(raw, name, minimum, MAX_ID if maximum is None else maximum)

    def path_id(self, raw: str, name: str = "chat_id") -> int:
        """An id from the URL path (1 to 2**63-1). Raises ValidationError."""
        return parse_int(raw, name)

    def send_json(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON and ``status``."""
        self.set_status(status)
        self.finish(dumps(data))

    def write_error(self, status_code: int, **kwargs) -> None:
        """Every error as ``{"error": {"code", "message"}}``; no tracebacks leak."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        exc = client_error(exc) or exc
        if isinstance(exc, SquallError):
            self.set_status(exc.status)
            set_retry_after(self, exc)
            body = exc.to_dict()
        elif isinstance(exc, tornado.web.HTTPError):
            code = _STATUS_CODES.get(exc.status_code, "http_error")
            body = {"code": code, "message": exc.log_message or status_reason(self)}
            if exc.status_code == 405:
                body["message"] = f"{self.request.method} is not allowed here"
        elif status_code >= 500:
            body = {"code": "internal_error", "message": "Something went wrong on the server"}
        else:
            body = {"code": _STATUS_CODES.get(status_code, "http_error"), "message": status_reason(self)}
        if self.get_status() == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="squall"')
        count_error(self, body["code"])
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps({"error": body}))


class NotFoundHandler(BaseHandler):
    """Any unknown route: JSON 404."""

    @public
    def prepare(self):
        raise NotFound(f"No route for {self.request.path}")


ACCESS_LOG = logging.getLogger("tornado.access")


def log_request(handler) -> None:
    """Access log line without the query string (which may carry ``access_token``); counts the request."""
    status = handler.get_status()
    settings = handler.application.settings
    route = settings.get("route_patterns", {}).get(type(handler), "unmatched")
    services = settings.get("services")
    if services is not None:
        services.hub.metrics.request(route, handler.request.method, status)
    if status < 400:
        level = logging.INFO
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    if not ACCESS_LOG.isEnabledFor(level):  # the line's fields are not even gathered
        return
    duration_ms = 1000.0 * handler.request.request_time()
    ACCESS_LOG.log(
        level, "%d %s %s (%s) %.2fms", status, handler.request.method, handler.request.path,
        handler.request.remote_ip, duration_ms,
        extra={"route": route, "method": handler.request.method, "status": status,
               "duration_ms": round(duration_ms, 2), "remote_ip": handler.request.remote_ip,
               "user_id": getattr(handler, "user_id", None)})
