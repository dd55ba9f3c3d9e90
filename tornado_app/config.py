"""Configuration: one frozen ``Config`` built once from flags and the environment.

Nothing else in the project reads the environment; ``run.py`` builds a Config and
passes it down (tests build their own).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

from .cors import MAX_AGE_LIMIT, parse_origins

log = logging.getLogger("squall.config")

DEFAULT_DATABASE_URL = "sqlite:///squall.db"


@dataclass(frozen=True)
class Config:
    """Every setting of a Squall process; defaults make a bare ``python run.py`` work."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = "memory"
    broker_prefix: str = ""  # starts every broker name (empty: "squall", or the URL's ?prefix=)
    # Routing between processes (issue 26, services/delivery/broker/shards.py): "sharded" (each
    # process receives its own users' envelopes) or "broadcast" (every process receives all)
    routing: str = "sharded"
    broker_shards: int = 16384  # users hashed into this many shard channels (same on every process)
    broker_shard_linger: float = 30.0  # seconds a shard stays subscribed after its last user left
    jwt_secret: str = ""
    token_ttl: int = 900  # seconds an access token lives (sessions: see docs/security.md)
    service_token: str = ""  # publish API; empty disables it (403)
    log_level: str = "info"
    processes: int = 1
    # Limits
    max_message_length: int = 4000  # characters of message content
    edit_window: int = 48 * 3600  # seconds after sending during which the sender may edit (0: never)
    max_frame_bytes: int = 64 * 1024  # WebSocket frames above this close with 1009
    max_body_bytes: int = 64 * 1024  # JSON request bodies above this get 413
    max_pending_bytes: int = 1024 * 1024  # per connection, before a slow consumer is closed
    rate_limit_per_second: float = 30.0  # message sends per user (token bucket)
    rate_limit_burst: int = 60
    messages_per_user_per_day: int = 20000  # stored messages per user and UTC day, then 429 quota_exceeded (0: off)
    reads_per_user_per_second: float = 10.0  # long-polls + GET /api/unread per user (token bucket), then 429
    reads_burst: int = 60
    login_failures_per_minute: int = 10  # per (username, client address), then 429
    # Streams
    sse_ping_interval: float = 15.0  # seconds between ": ping" comments
    sse_retry_ms: int = 2000
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 30.0
    replay_limit: int = 1000  # more missed events than this -> resync
    notification_retention_days: float = 30.0
    presence_ttl: float = 15.0  # seconds a process's presence claims live without refresh
    # Password hashing: "standard" (argon2id defaults) or "fast" (tests and benchmarks only)
    password_hash_profile: str = "standard"
    # Front end / browser
    cookie_secure: bool = False
    allowed_origins: tuple = ()  # normalised scheme://host[:port] (tornado_app/cors.py parse_origin)
    cors_max_age: int = 600  # seconds a browser may cache a preflight answer (0 to 86400)
    web_dir: str = field(default_factory=lambda: os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web"))
    # Test hook: refuse WebSocket upgrades (simulates a proxy that blocks them)
    block_websockets: bool = False
    db_threads: int = 0  # 0 = automatic (2 readers on SQLite, 8 on PostgreSQL)
    # Observability (metrics, logs, admin console)
    log_format: str = "text"  # text or json (one JSON object per line)
    metrics_token: str = ""  # bearer token that /metrics requires; empty: see metrics_port
    metrics_port: int = 0  # >0: also serve /metrics (no token needed) on metrics_host:metrics_port
    metrics_host: str = "127.0.0.1"
    metrics_dir: str = ""  # where workers share their figures (set by the supervisor if empty)
    admin_sample_seconds: float = 5.0  # how often the admin console's history is sampled
    worker: int = 0  # this process's worker slot (set by the supervisor; a metrics label)
    # Long-polling (/poll/*, issue 15)
    poll_timeout: float = 25.0  # seconds a poll waits for an event when it gives no ?timeout=
    poll_max_timeout: float = 55.0  # largest ?timeout= a poll may ask for
    poll_presence_grace: float = 5.0  # seconds a /poll/chat?chat_id= poller stays active between polls
    # Sessions and tokens (issue 10): refresh rotation, tickets, login abuse, proxies
    refresh_ttl: int = 30 * 24 * 3600  # seconds a refresh token (and its session) lives unused
    ticket_ttl: int = 30  # seconds a stream ticket is valid (single use)
    token_expiring_notice: float = 60.0  # WebSockets get token_expiring this long before expiry
    jwt_secret_previous: str = ""  # still accepted for verification while rotating JWT_SECRET
    trusted_proxies: tuple = ()  # CIDRs whose X-Forwarded-For / X-Real-IP are believed
    login_failures_per_address_per_minute: int = 30  # failed logins per client address, then 429
    service_token_failures_per_address_per_minute: int = 10  # wrong service tokens per address, then 429
    registrations_per_address_per_minute: int = 10  # registrations per client address, then 429
    # Every address limit counts an IPv6 client by its /64 (services/operations/ratelimit.py address_key).
    logins_per_address_per_minute: int = 60  # login attempts per client address, any outcome, then 429
    refreshes_per_address_per_minute: int = 120  # POST /api/auth/refresh per client address, then 429
    refreshes_per_session_per_minute: int = 30  # refreshes of one session (a client refreshes once a token_ttl)
    refresh_reuse_window: int = 7 * 24 * 3600  # seconds a spent refresh token is kept (reuse revokes its session)
    hash_threads: int = 2  # password hashing threads
    hash_queue: int = 16  # hashes waiting for a thread; past it 503 server_busy
    hash_per_address: int = 2  # concurrent hashes per client address; past it 503 server_busy
    # Hostile network (issue 9): timeouts, connection caps, handshake rate, amplification limits
    header_timeout: float = 10.0  # seconds for a new connection's request headers to arrive
    body_timeout: float = 30.0  # seconds for a request body to arrive
    idle_timeout: float = 60.0  # seconds a keep-alive connection may wait for its next request
    max_connections: int = 0  # open client connections per process; 0 = derived from RLIMIT_NOFILE
    listen_backlog: int = 4096  # connections the kernel queues for accept (capped by net.core.somaxconn)
    max_connections_per_user: int = 32  # /ws/* and /sse/* streams per user and process
    max_handshakes_per_second: float = 500.0  # new WebSocket/SSE streams per process
    handshake_burst: int = 100
    concurrent_opens: int = 64  # streams subscribing, reading their state and replaying at once; the rest wait in order
    # failed authentications of /ws/*, /sse/* and /poll/* per client address (IPv6: its /64), then 429
    failed_stream_auths_per_address_per_minute: int = 60
    # open connections per client address (IPv6: its /64); behind --trusted-proxies, streams per
    # forwarded address; 0 = no limit
    max_connections_per_address: int = 256
    sse_retry_max_ms: int = 10000  # SSE "retry:" is random in [sse_retry_ms, sse_retry_max_ms]
    max_group_members: int = 256
    max_publish_external_ids: int = 1000  # external ids per POST /api/notifications (issue 22)
    groups_per_hour: int = 30  # group chats one user may create per hour
    group_changes_per_minute: int = 20  # title, member and role changes one user may make per minute
    typing_interval: float = 2.0  # at most one typing frame fanned out per user and chat
    mark_read_interval: float = 0.5  # at most one read-position write per user and chat
    test_notifications_per_minute: int = 30  # POST /api/notifications/test per user
    chats_page_size: int = 100  # default (and at most 500) chats per GET /api/chats page
    # User directory (issue 20): GET /api/users by "prefix" (2+ characters), "exact" username, or "off" (403)
    user_search: str = "prefix"
    user_searches_per_minute: int = 30  # GET /api/users per user (burst as large), then 429
    message_searches_per_minute: int = 30  # GET /api/search per user (burst as large), then 429
    # Attachments (issue 25)
    upload_dir: str = "./uploads"  # where uploaded files are stored (local disk store)
    max_upload_bytes: int = 25 * 1024 * 1024  # one upload, then 413 upload_too_large
    upload_quota_bytes: int = 1024 * 1024 * 1024  # all of a user's stored uploads, then 413 upload_quota_exceeded
    upload_url_ttl: int = 300  # seconds a signed file link works
    orphan_upload_ttl: float = 24 * 3600.0  # seconds an upload no message lists is kept
    upload_timeout: float = 600.0  # seconds an upload's body may take (--body-timeout for everything else)
    log_sql: bool = False  # log SQL statements (never their parameters) at debug level
    # Notification preferences and Web Push (issue 11)
    vapid_private_key: str = ""  # base64url P-256 key; empty: generated once and kept in the database
    vapid_subject: str = "mailto:squall@example.com"  # the "sub" claim push services may contact
    push_allow_http: bool = False  # allow http://, IP literals, any port, internal addresses (local push services)
    push_threads: int = 4  # threads that send pushes
    push_queue: int = 1000  # pushes waiting for a thread; past it they are dropped (counted)
    push_queue_per_user: int = 100  # of push_queue, one user's pushes; past it theirs are dropped (counted)
    push_ttl: int = 86400  # seconds a push service keeps an undelivered push
    push_retries: int = 3  # retries of a push answered 429/5xx (backoff 1 s, 2 s, 4 s …)
    push_timeout: float = 10.0  # seconds for one push request
    max_push_subscriptions: int = 10  # per user; a new one past it replaces the oldest
    max_muted_types: int = 50  # entries of the muted_types preference
    # hosts (and their subdomains) push endpoints may name: the browsers' push services; "*": any
    push_hosts: tuple = ("fcm.googleapis.com", "android.googleapis.com", "push.services.mozilla.com",
                         "push.apple.com", "notify.windows.com")
    # Performance (issue 13)
    event_loop: str = "uvloop"  # asyncio or uvloop (uvloop falls back to asyncio when not installed)
    # sys.setswitchinterval of a serving process: how long the event loop may keep the GIL from a
    # database thread whose answer has arrived (Python's default is 5 ms)
    switch_interval_ms: float = 1.0
    # Identity owned by the host product (issue 22; docs/integration.md)
    auth_mode: str = "builtin"  # builtin | external | both
    external_jwt_secret: str = ""  # HMAC secret of the product's tokens (HS256/384/512)
    external_jwks_url: str = ""  # https:// JWKS of the product's public keys (http:// on loopback only)
    external_jwt_public_key: str = ""  # PEM file of the product's public key (RSA, EC P-256, Ed25519)
    external_jwt_issuer: str = ""  # required "iss" of external tokens
    external_jwt_audience: str = ""  # required "aud" of external tokens
    external_jwt_algorithms: tuple = ()  # allowlist; empty: derived from the key source (never "none")
    external_jwt_leeway: float = 30.0  # seconds of clock skew allowed on exp/nbf/iat (0 to 300)
    external_jwks_min_refetch: float = 60.0  # at most one JWKS fetch per this many seconds (5 to 86400)
    external_jwks_timeout: float = 5.0  # seconds one JWKS fetch may take (0.5 to 30)
    external_max_token_bytes: int = 8192  # longer external tokens are refused unread (1024 to 65536)
    # Webhooks to the product's backend (issue 23; services/outbound/webhooks.py, docs/integration.md)
    webhook_url: str = ""  # http(s) URL the events are POSTed to; empty: no webhooks (no outbox rows)
    webhook_secret: str = ""  # Standard Webhooks secret whsec_<base64 of 24-64 bytes>
    webhook_timeout: float = 10.0  # seconds one delivery attempt may take (connect + answer)
    webhook_retry_window: float = 86400.0  # seconds an event is retried (from its first attempt), then failed
    webhook_concurrency: int = 8  # attempts in flight per process (one per chat or user at a time)
    presence_grace: float = 5.0  # seconds without any stream anywhere before user.offline
    unseen_delay: float = 600.0  # seconds of unread messages while connected nowhere before notification.unseen

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def sqlite_path(self) -> Optional[str]:
        """The file of a ``sqlite:///`` URL, or None for other databases."""
        if self.database_url.startswith("sqlite:///"):
            return self.database_url[len("sqlite:///"):]
        if self.database_url.startswith("sqlite://"):
            return self.database_url[len("sqlite://"):] or ":memory:"
        return None


# name -> (env variable, type, help); the flag is --name-with-dashes
# (field, environment variable, parser of the text, help)
_OPTIONS: List[Tuple[str, str, Callable[[str], Any], str]] = [
    ("host", "SQUALL_HOST", str, "interface to listen on"),
    ("port", "PORT", int, "TCP port"),
    ("database_url", "DATABASE_URL", str, "sqlite:///path.db or postgresql://user@host/db"),
    ("broker_url", "BROKER_URL", str, "memory, redis://host:6379/0 or postgresql://…"),
    ("broker_prefix", "BROKER_PREFIX", str,
     "first part of every Redis key/channel or PostgreSQL broker table/channel (default squall); "
     "the installation id follows it"),
    ("routing", "ROUTING", str, "sharded (a process receives only its users' events) or broadcast (every "
     "process receives every event); Redis brokers only"),
    ("broker_shards", "BROKER_SHARDS", int, "shard channels users are hashed into (the same on every process)"),
    ("broker_shard_linger", "BROKER_SHARD_LINGER", float,
     "seconds a shard channel stays subscribed after its last user left"),
    ("jwt_secret", "JWT_SECRET", str, "HS256 secret; generated once and kept in the database if unset"),
    ("token_ttl", "TOKEN_TTL", int, "access token lifetime in seconds"),
    ("service_token", "SERVICE_TOKEN", str, "bearer token for the publish API (unset: API answers 403)"),
    ("log_level", "LOG_LEVEL", str, "debug, info, warning or error"),
    ("processes", "PROCESSES", int, "worker processes sharing the port (needs a shared broker)"),
    ("max_message_length", "MAX_MESSAGE_LENGTH", int, "longest message content, in characters"),
    ("edit_window", "EDIT_WINDOW", int, "seconds after sending during which a message may be edited (0: never)"),
    ("max_frame_bytes", "MAX_FRAME_BYTES", int, "largest WebSocket frame accepted"),
    ("max_pending_bytes", "MAX_PENDING_BYTES", int, "unsent bytes per connection before it is closed"),
    ("rate_limit_per_second", "RATE_LIMIT_PER_SECOND", float, "message sends per user per second"),
    ("rate_limit_burst", "RATE_LIMIT_BURST", int, "burst of message sends per user"),
    ("messages_per_user_per_day", "MESSAGES_PER_USER_PER_DAY", int,
     "stored messages per user and UTC day, then 429 quota_exceeded (0: no quota)"),
    ("reads_per_user_per_second", "READS_PER_USER_PER_SECOND", float,
     "long-polls and GET /api/unread per user per second, then 429 (0: no limit)"),
    ("reads_burst", "READS_BURST", int, "burst of long-polls and GET /api/unread per user"),
    ("sse_ping_interval", "SSE_PING_INTERVAL", float, "seconds between SSE heartbeat comments"),
    ("ws_ping_interval", "WS_PING_INTERVAL", float, "seconds between WebSocket pings"),
    ("replay_limit", "REPLAY_LIMIT", int, "most events replayed on resume before asking for a resync"),
    ("notification_retention_days", "NOTIFICATION_RETENTION_DAYS", float, "days notifications are kept"),
    ("presence_ttl", "PRESENCE_TTL", float, "seconds before a dead process's presence expires"),
    ("password_hash_profile", "PASSWORD_HASH_PROFILE", str, "standard, or fast for tests/benchmarks"),
    ("db_threads", "DB_THREADS", int, "database reader threads (0: automatic)"),
    # Observability
    ("log_format", "LOG_FORMAT", str, "text, or json: one JSON object per log line"),
    ("metrics_token", "METRICS_TOKEN", str, "bearer token required by /metrics on the main port"),
    ("metrics_port", "METRICS_PORT", int, "serve /metrics without a token on metrics-host:PORT (0: off)"),
    ("metrics_host", "METRICS_HOST", str, "interface of the metrics port"),
    ("metrics_dir", "METRICS_DIR", str, "folder where --processes workers share their figures (default: a temporary one)"),
    ("admin_sample_seconds", "ADMIN_SAMPLE_SECONDS", float, "seconds between samples of the admin console's charts"),
    # Long-polling (/poll/*, issue 15)
    ("poll_timeout", "POLL_TIMEOUT", float, "seconds a long-poll waits for an event by default"),
    ("poll_max_timeout", "POLL_MAX_TIMEOUT", float, "largest ?timeout= of a long-poll, in seconds"),
    ("poll_presence_grace", "POLL_PRESENCE_GRACE", float,
     "seconds a /poll/chat?chat_id= client stays active in the chat between polls"),
    # Front end assets (issue 14)
    ("web_dir", "WEB_DIR", str, "folder of the web front end (its pages and static/)"),
    # Sessions and tokens (issue 10)
    ("refresh_ttl", "REFRESH_TTL", int, "refresh token (session) lifetime in seconds"),
    ("ticket_ttl", "TICKET_TTL", int, "stream ticket lifetime in seconds (single use)"),
    ("token_expiring_notice", "TOKEN_EXPIRING_NOTICE", float,
     "seconds before expiry a WebSocket gets token_expiring (at most half the token's life)"),
    ("jwt_secret_previous", "JWT_SECRET_PREVIOUS", str, "previous JWT secret, still accepted while rotating"),
    ("trusted_proxies", "TRUSTED_PROXIES", lambda v: parse_cidrs(v),
     "comma-separated CIDRs of reverse proxies whose X-Forwarded-For/X-Real-IP are trusted"),
    ("login_failures_per_minute", "LOGIN_FAILURES_PER_MINUTE", int,
     "failed logins per (username, client address) per minute"),
    ("login_failures_per_address_per_minute", "LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE", int,
     "failed logins per client address per minute"),
    ("service_token_failures_per_address_per_minute", "SERVICE_TOKEN_FAILURES_PER_ADDRESS_PER_MINUTE", int,
     "wrong service tokens per client address per minute, then 429 for every service-API call from it"),
    ("registrations_per_address_per_minute", "REGISTRATIONS_PER_ADDRESS_PER_MINUTE", int,
     "registrations per client address per minute"),
    ("logins_per_address_per_minute", "LOGINS_PER_ADDRESS_PER_MINUTE", int,
     "login attempts per client address per minute, whatever their outcome (IPv6: per /64)"),
    ("refreshes_per_address_per_minute", "REFRESHES_PER_ADDRESS_PER_MINUTE", int,
     "refresh-token rotations per client address per minute (IPv6: per /64)"),
    ("refreshes_per_session_per_minute", "REFRESHES_PER_SESSION_PER_MINUTE", int,
     "refresh-token rotations of one session per minute"),
    ("refresh_reuse_window", "REFRESH_REUSE_WINDOW", int,
     "seconds a spent refresh token is kept so that presenting it again revokes its session (then pruned)"),
    ("hash_threads", "HASH_THREADS", int, "password hashing threads"),
    ("hash_queue", "HASH_QUEUE", int, "password hashes allowed to wait for a thread (then 503)"),
    ("hash_per_address", "HASH_PER_ADDRESS", int, "concurrent password hashes per client address (then 503)"),
    # Hostile network (issue 9)
    ("max_body_bytes", "MAX_BODY_BYTES", int, "largest request body; larger ones get 413 at any size"),
    ("cors_max_age", "CORS_MAX_AGE", int,
     "seconds a browser may cache the answer to a CORS preflight (Access-Control-Max-Age; 0 to 86400)"),
    ("header_timeout", "HEADER_TIMEOUT", float, "seconds for a new connection to send complete request headers"),
    ("body_timeout", "BODY_TIMEOUT", float, "seconds for a request body to arrive"),
    ("idle_timeout", "IDLE_TIMEOUT", float, "seconds an idle keep-alive connection is kept"),
    ("max_connections", "MAX_CONNECTIONS", int,
     "open client connections per process (0: descriptor limit minus 64 and a tenth)"),
    ("max_connections_per_user", "MAX_CONNECTIONS_PER_USER", int, "WebSocket/SSE streams per user and process"),
    ("listen_backlog", "LISTEN_BACKLOG", int,
     "connections the kernel queues until accepted (capped by net.core.somaxconn)"),
    ("max_handshakes_per_second", "MAX_HANDSHAKES_PER_SECOND", float, "new WebSocket/SSE streams per second"),
    ("handshake_burst", "HANDSHAKE_BURST", int, "burst of new WebSocket/SSE streams above the rate"),
    ("concurrent_opens", "CONCURRENT_OPENS", int,
     "admitted streams that subscribe, read their state and replay at the same time (the rest wait in "
     "order; 1 to 1000)"),
    ("failed_stream_auths_per_address_per_minute", "FAILED_STREAM_AUTHS_PER_ADDRESS_PER_MINUTE", int,
     "failed authentications of stream and long-poll requests per client address per minute (then 429)"),
    ("max_connections_per_address", "MAX_CONNECTIONS_PER_ADDRESS", int,
     "open connections per client address, IPv6 by /64 (behind --trusted-proxies: streams per forwarded "
     "address; 0: no limit)"),
    ("sse_retry_max_ms", "SSE_RETRY_MAX_MS", int, "upper end of the random SSE retry: (from 2000 ms)"),
    ("max_group_members", "MAX_GROUP_MEMBERS", int, "most members of a group chat"),
    ("max_publish_external_ids", "MAX_PUBLISH_EXTERNAL_IDS", int,
     "most external_ids in one POST /api/notifications (400 too_many_external_ids past it)"),
    ("groups_per_hour", "GROUPS_PER_HOUR", int, "group chats one user may create per hour"),
    ("group_changes_per_minute", "GROUP_CHANGES_PER_MINUTE", int,
     "group title, member and role changes one user may make per minute (leaving is not counted)"),
    ("typing_interval", "TYPING_INTERVAL", float, "seconds between typing frames fanned out per user and chat"),
    ("mark_read_interval", "MARK_READ_INTERVAL", float, "seconds between read-position writes per user and chat"),
    ("test_notifications_per_minute", "TEST_NOTIFICATIONS_PER_MINUTE", int,
     "POST /api/notifications/test per user per minute"),
    ("chats_page_size", "CHATS_PAGE_SIZE", int, "default page size of GET /api/chats (at most 500)"),
    ("user_search", "USER_SEARCH", str,
     "GET /api/users: prefix (at least 2 characters), exact (a whole username) or off (403)"),
    ("user_searches_per_minute", "USER_SEARCHES_PER_MINUTE", int, "GET /api/users per user per minute (then 429)"),
    ("message_searches_per_minute", "MESSAGE_SEARCHES_PER_MINUTE", int,
     "GET /api/search (messages) per user per minute (then 429)"),
    # Attachments (issue 25)
    ("upload_dir", "UPLOAD_DIR", str, "directory of uploaded files (made on first upload)"),
    ("max_upload_bytes", "MAX_UPLOAD_BYTES", int, "largest upload (POST /api/uploads), then 413 upload_too_large"),
    ("upload_quota_bytes", "UPLOAD_QUOTA_BYTES", int,
     "bytes of stored uploads per user, then 413 upload_quota_exceeded"),
    ("upload_url_ttl", "UPLOAD_URL_TTL", int, "seconds a signed file link (GET /api/uploads/{id}/link) works"),
    ("orphan_upload_ttl", "ORPHAN_UPLOAD_TTL", float,
     "seconds an upload that no message lists is kept before it is deleted"),
    ("upload_timeout", "UPLOAD_TIMEOUT", float, "seconds the body of one upload may take to arrive"),
    # Notification preferences and Web Push (issue 11)
    ("vapid_private_key", "VAPID_PRIVATE_KEY", str,
     "Web Push VAPID private key (base64url, raw P-256); generated once and kept in the database if unset"),
    ("vapid_subject", "VAPID_SUBJECT", str, "VAPID subject (mailto: or https: URL) push services may contact"),
    ("push_threads", "PUSH_THREADS", int, "threads sending Web Push requests"),
    ("push_queue", "PUSH_QUEUE", int, "pushes waiting for a thread; past it new pushes are dropped"),
    ("push_queue_per_user", "PUSH_QUEUE_PER_USER", int,
     "one user's share of --push-queue; past it that user's new pushes are dropped (users served in turn)"),
    ("push_ttl", "PUSH_TTL", int, "seconds a push service keeps an undelivered push (TTL header)"),
    ("push_retries", "PUSH_RETRIES", int, "retries of a push answered 429 or 5xx, with backoff"),
    ("push_timeout", "PUSH_TIMEOUT", float, "seconds for one push request"),
    ("max_push_subscriptions", "MAX_PUSH_SUBSCRIPTIONS", int,
     "push subscriptions per user; a new one past it replaces the oldest"),
    ("max_muted_types", "MAX_MUTED_TYPES", int, "entries of the muted_types preference"),
    ("push_hosts", "PUSH_HOSTS", lambda v: tuple(h.strip().lower() for h in v.split(",") if h.strip()),
     "comma-separated hosts (with subdomains) push endpoints may use; * for any"),
    # Performance (issue 13)
    ("event_loop", "EVENT_LOOP", str, "event loop: uvloop (faster; asyncio when uvloop is not installed) or asyncio"),
    ("switch_interval_ms", "SWITCH_INTERVAL_MS", float,
     "milliseconds the event loop may keep the GIL from a database thread whose answer has arrived "
     "(Python's switch interval; 0.1 to 100)"),
    # Identity owned by the host product (issue 22)
    ("auth_mode", "AUTH_MODE", str, "builtin (Squall accounts), external (the product's tokens) or both"),
    ("external_jwt_secret", "EXTERNAL_JWT_SECRET", str,
     "HMAC secret (32+ characters) of the product's tokens; one key source of three"),
    ("external_jwks_url", "EXTERNAL_JWKS_URL", str,
     "https:// URL of the product's JWKS (http:// only on a loopback host); one key source of three"),
    ("external_jwt_public_key", "EXTERNAL_JWT_PUBLIC_KEY", str,
     "PEM file of the product's public key (RSA, EC P-256 or Ed25519); one key source of three"),
    ("external_jwt_issuer", "EXTERNAL_JWT_ISSUER", str, "the 'iss' external tokens must carry (required)"),
    ("external_jwt_audience", "EXTERNAL_JWT_AUDIENCE", str, "the 'aud' external tokens must carry (required)"),
    ("external_jwt_algorithms", "EXTERNAL_JWT_ALGORITHMS",
     lambda v: tuple(a.strip() for a in v.split(",") if a.strip()),
     "comma-separated algorithm allowlist (HS* with the secret; RS*, PS*, ES*, EdDSA with keys); "
     "empty: derived from the key source"),
    ("external_jwt_leeway", "EXTERNAL_JWT_LEEWAY", float, "seconds of clock skew allowed on exp, nbf, iat (0-300)"),
    ("external_jwks_min_refetch", "EXTERNAL_JWKS_MIN_REFETCH", float,
     "at most one JWKS fetch per this many seconds, however many unknown kids arrive (5-86400)"),
    ("external_jwks_timeout", "EXTERNAL_JWKS_TIMEOUT", float, "seconds one JWKS fetch may take (0.5-30)"),
    # Webhooks (issue 23)
    ("webhook_url", "WEBHOOK_URL", str,
     "http:// or https:// URL that receives the signed webhooks (no user:password@); empty: off"),
    ("webhook_secret", "WEBHOOK_SECRET", str,
     "Standard Webhooks signing secret, whsec_ + base64 of 24 to 64 random bytes (required with --webhook-url)"),
    ("webhook_timeout", "WEBHOOK_TIMEOUT", float, "seconds one webhook attempt may take (0.5 to 60)"),
    ("webhook_retry_window", "WEBHOOK_RETRY_WINDOW", float,
     "seconds a webhook is retried after timeouts, 5xx and 429 before it is marked failed (1 to 604800)"),
    ("webhook_concurrency", "WEBHOOK_CONCURRENCY", int, "webhook attempts in flight per process (1 to 256)"),
    ("presence_grace", "PRESENCE_GRACE", float,
     "seconds a user has no stream anywhere before user.offline and the presence event; a reconnect within it "
     "sends nothing (0 to 3600)"),
    ("unseen_delay", "UNSEEN_DELAY", float,
     "seconds a user has unread messages while connected nowhere before notification.unseen (1 to 604800)"),
    ("external_max_token_bytes", "EXTERNAL_MAX_TOKEN_BYTES", int,
     "longest external token accepted, in bytes; longer ones get 401 token_too_large (1024-65536)"),
]


def parse_cidrs(value) -> tuple:
    """``"10.0.0.0/8, 127.0.0.1"`` → a tuple of CIDR strings. Raises ValueError for a bad one."""
    import ipaddress
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(ipaddress.ip_network(item.strip(), strict=False)) for item in items if item.strip())


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; every flag also has an environment variable."""
    parser = argparse.ArgumentParser(
        prog="python run.py",
        description="Squall: real-time chat and notification server.",
        epilog="Commands: 'python run.py migrate' applies schema migrations and exits; "
               "'python run.py admin grant|revoke USERNAME' gives or takes the admin console, "
               "'python run.py admin list' lists the admins. "
               "Flags override environment variables, which override defaults.",
    )
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "migrate", "admin", "username-collisions"],
                        help="serve (default), migrate, admin grant|revoke USERNAME, admin list, or username-collisions "
                             "(list usernames that differ only in case or Unicode form, which schema "
                             "version 3 refuses)")
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    defaults = Config()
    for name, env, typ, help_text in _OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                            help=f"{help_text} [env {env}; default {getattr(defaults, name)!r}]")
    parser.add_argument("--cookie-secure", dest="cookie_secure", action="store_true", default=None,
                        help="mark the login cookie Secure (behind HTTPS) [env COOKIE_SECURE]")
    parser.add_argument("--block-websockets", dest="block_websockets", action="store_true", default=None,
                        help="answer 503 to every /ws/* upgrade, as a proxy that blocks WebSockets would "
                             "(testing the SSE fallback) [env BLOCK_WEBSOCKETS]")
    parser.add_argument("--allowed-origin", dest="allowed_origins", action="append", default=None,
                        help="an origin (scheme://host[:port]) whose pages may use the API, streams and long-polls "
                             "from the browser (CORS, with a bearer token or a stream ticket) and open WebSockets; "
                             "its JSON writes are not refused as cross-site (repeatable) "
                             "[env ALLOWED_ORIGINS, comma-separated]")
    parser.add_argument("--log-sql", dest="log_sql", action="store_true", default=None,
                        help="log SQL statements, without their parameters, at debug level [env LOG_SQL]")
    # Notification preferences and Web Push (issue 11)
    parser.add_argument("--push-allow-http", dest="push_allow_http", action="store_true", default=None,
                        help="accept http:// Web Push endpoints, IP literals, any port and internal addresses"
                             " (local push services, tests) [env PUSH_ALLOW_HTTP]")
    return parser


def load_config(argv: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None
                ) -> Tuple[Union[str, Tuple[str, ...]], Config]:
    """Parse flags and environment into ``(command, Config)``."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv))
    values = {}
    for name, env, typ, _ in _OPTIONS:
        value = getattr(args, name)
        if value is None and environ.get(env):
            value = typ(environ[env])
        if value is not None:
            values[name] = value
    if args.cookie_secure or environ.get("COOKIE_SECURE", "").lower() in ("1", "true", "yes"):
        values["cookie_secure"] = True
    if args.block_websockets or environ.get("BLOCK_WEBSOCKETS", "").lower() in ("1", "true", "yes"):
        values["block_websockets"] = True
    if args.log_sql or environ.get("LOG_SQL", "").lower() in ("1", "true", "yes"):
        values["log_sql"] = True
    if args.push_allow_http or environ.get("PUSH_ALLOW_HTTP", "").lower() in ("1", "true", "yes"):
        values["push_allow_http"] = True
    origins = args.allowed_origins or [o for o in environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]
    if origins:
        try:
            values["allowed_origins"] = parse_origins(origins)
        except ValueError as exc:
            raise SystemExit(f"--allowed-origin {exc}") from None
    config = Config(**values)
    for name in ("token_ttl", "refresh_ttl", "ticket_ttl", "hash_threads", "listen_backlog"):
        if getattr(config, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= config.cors_max_age <= MAX_AGE_LIMIT:
        raise SystemExit(f"--cors-max-age must be from 0 to {MAX_AGE_LIMIT} seconds")
    if config.processes < 1:
        raise SystemExit("--processes must be at least 1")
    if not 1 <= config.concurrent_opens <= 1000:
        raise SystemExit("--concurrent-opens must be from 1 to 1000")
    # The rule of services/delivery/broker/base.py check_prefix (part of PostgreSQL identifiers)
    if config.broker_prefix and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", config.broker_prefix):
        raise SystemExit("--broker-prefix must be 1-32 letters, digits and underscores, starting with a letter")
    if config.routing not in ("sharded", "broadcast"):
        raise SystemExit("--routing must be sharded or broadcast")
    if not 1 <= config.broker_shards <= 1 << 20:  # broker/shards.py MAX_SHARDS
        raise SystemExit(f"--broker-shards must be from 1 to {1 << 20}")
    if not 0 <= config.broker_shard_linger <= 3600:
        raise SystemExit("--broker-shard-linger must be from 0 to 3600 seconds")
    if config.log_format not in ("text", "json"):
        raise SystemExit("--log-format must be text or json")
    if config.event_loop not in ("asyncio", "uvloop"):
        raise SystemExit("--event-loop must be asyncio or uvloop")
    if not 0.1 <= config.switch_interval_ms <= 100:
        raise SystemExit("--switch-interval-ms must be from 0.1 to 100")
    if config.admin_sample_seconds <= 0:
        raise SystemExit("--admin-sample-seconds must be positive")
    if config.user_search not in ("prefix", "exact", "off") or config.user_searches_per_minute < 1:
        raise SystemExit("--user-search must be prefix, exact or off, and --user-searches-per-minute at least 1")
    if config.message_searches_per_minute < 1:
        raise SystemExit("--message-searches-per-minute must be at least 1")
    if (config.max_upload_bytes < 1 or config.upload_quota_bytes < 1 or config.upload_url_ttl < 1
            or config.orphan_upload_ttl <= 0 or config.upload_timeout <= 0 or not config.upload_dir):
        raise SystemExit("--max-upload-bytes, --upload-quota-bytes and --upload-url-ttl must be at least 1, "
                         "--orphan-upload-ttl and --upload-timeout positive, --upload-dir not empty")
    if (config.push_threads < 1 or config.push_queue < 1 or config.push_queue_per_user < 1
            or config.max_push_subscriptions < 1):
        raise SystemExit("--push-threads, --push-queue, --push-queue-per-user and --max-push-subscriptions"
                         " must be at least 1")
    from .services.outbound.webhooks import check_webhook_config
    try:
        check_webhook_config(config)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.command == "admin":
        if args.args != ["list"] and (len(args.args) != 2 or args.args[0] not in ("grant", "revoke")):
            raise SystemExit("usage: python run.py admin grant|revoke USERNAME, or admin list")
        return ("admin", *args.args), config
    if args.args:
        raise SystemExit(f"unexpected arguments: {' '.join(args.args)}")
    if not 0 <= config.poll_timeout <= config.poll_max_timeout or config.poll_presence_grace <= 0:
        raise SystemExit("need 0 <= --poll-timeout <= --poll-max-timeout and --poll-presence-grace > 0")
    if config.auth_mode != "builtin" or config.external_jwt_secret or config.external_jwks_url \
            or config.external_jwt_public_key:
        from .services.identity.external_auth import ExternalAuth  # reads and checks the key file too
        try:
            ExternalAuth.check_config(config)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    return args.command, config
