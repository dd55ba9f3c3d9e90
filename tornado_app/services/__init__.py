"""Services: the container that the application, handlers and tests share."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import peewee
import tornado.ioloop

from models import init_db, is_postgres
from models.schema import migrate
from ..config import Config
from ..tasks import sliced, spawn
from .chat import (ChatLimits, ChatService, GroupService, LocalUploadStore, MessageSearch, PresenceService,
                   UploadLimits, UploadService)
from .delivery import (Broker, ConnectionRegistry, Hub, NotificationService, OpenStateBatcher, PollPresence,
                       PreferenceService, StreamAdmission, create_broker)
from .delivery.control import ControlDispatch, ControlHandlers
from .delivery.hub import HubListeners
from .delivery.connection import Connection  # what the registry holds (the ping timer's list)
from .identity import AuthService, ExternalAuth, RefreshLimits, SessionService, UserDirectory, UserService
from .identity.jwt_secret import legacy_secret_path, stored_secret
from .integration import ServiceApi
from .operations import MessageQuota, Metrics, MetricsHub, Monitor, ReadLimit
from .outbound import PushService, WebhookService
from .storage import DatabaseExecutor

if TYPE_CHECKING:  # the server is built on these services (application.make_http_server)
    from ..httpserver import SquallHTTPServer

log = logging.getLogger("squall.services")


@dataclass
class Services:
    """Everything a Squall process shares: config, database, hub and the services on top."""

    config: Config
    db: peewee.Database
    dbx: DatabaseExecutor
    registry: ConnectionRegistry
    broker: Broker
    hub: Hub
    auth: AuthService
    users: UserService
    notifications: NotificationService
    chat: ChatService
    sessions: SessionService
    origin: str
    metrics: MetricsHub
    monitor: Monitor
    poll_presence: PollPresence
    admission: StreamAdmission
    reads: ReadLimit  # long-polls and GET /api/unread per user (issue 20)
    preferences: PreferenceService  # issue 11
    push: PushService
    webhooks: WebhookService  # issue 23 (built always; enabled only with --webhook-url)
    open_state: OpenStateBatcher  # the first state of new streams, batched
    directory: UserDirectory  # GET /api/users (issue 20)
    search: MessageSearch  # GET /api/search (issue 25)
    uploads: UploadService  # attachments (issue 25)
    service_api: ServiceApi  # /api/service/* (issue 22)
    groups: GroupService  # groups that change (issue 25)
    presence: PresenceService  # online and last seen (issue 25)
    listeners: HubListeners  # what the hub tells the services built on it (control messages, chat gate, gaps)
    # Stored ids are committed in id order, so a resumed stream's client had every id up to its
    # resume position (Connection drops live copies of them): SQLite (one writer at a time,
    # whatever the processes), or one process. Not PostgreSQL with several processes: its
    # sequence hands out ids before the commits, which may land in another order.
    ids_in_commit_order: bool
    # The product's tokens (--auth-mode external|both; issue 22). None in builtin mode, the
    # default: then no token is external and nothing is verified against the product's keys.
    external: Optional[ExternalAuth] = None
    # The SquallHTTPServer serving these services: None until a server (run.py, a test fixture) starts.
    http_server: Optional[SquallHTTPServer] = None
    closing: bool = False
    _prune_task: Optional[asyncio.Task] = None
    _heartbeat: Optional[tornado.ioloop.PeriodicCallback] = None
    _sweeper: Optional[tornado.ioloop.PeriodicCallback] = None
    _pinger: Optional[tornado.ioloop.PeriodicCallback] = None

    async def start(self) -> None:
        """Create or migrate the schema, connect the broker, start the writer, retention and heartbeats."""
        await self.dbx.write_raw(migrate, self.db)
        if not self.config.jwt_secret:
            await self._use_stored_jwt_secret()
        await self.sessions.start()
        if self.external is not None:
            await self.external.start()
        # Every broker name carries the installation id (one per database): deployments that
        # share a Redis or a broker database never receive each other's events (issue 20).
        self.broker.scope(self.sessions.installation_id)
        await self.push.start()
        await self.hub.start(self.listeners)
        self.chat.start()
        self.uploads.start()
        await self.webhooks.start()
        self._prune_task = spawn(self._prune_forever(), name="services.prune")
        # Here rather than in the server, so that every server of these services (run.py,
        # the test fixtures) keeps idle SSE streams alive.
        self._heartbeat = tornado.ioloop.PeriodicCallback(self._beat, self.config.sse_ping_interval * 1000)
        self._heartbeat.start()
        self.monitor.start()
        self.poll_presence.start()
        # One sweep a second warns and ends every connection whose token is expiring (no timer each).
        self._sweeper = tornado.ioloop.PeriodicCallback(self.sessions.sweep, 1000)
        self._sweeper.start()
        # One timer pings every WebSocket (not a task per connection).
        if self.config.ws_ping_interval > 0:
            self._pinger = tornado.ioloop.PeriodicCallback(self._ping_websockets,
                                                           self.config.ws_ping_interval * 1000)
            self._pinger.start()

    async def _use_stored_jwt_secret(self) -> None:
        """No --jwt-secret: sign with the database's generated secret (shared by every process and host)."""
        legacy = legacy_secret_path(self.config.sqlite_path)
        secret, imported = await self.dbx.write(stored_secret, legacy)
        self.auth.use_secret(secret)
        if imported:
            log.warning("moved the generated JWT secret from %s into the database (setting %r); "
                        "the file is no longer read", legacy, "jwt_secret")
        else:
            log.info("JWT_SECRET is not set: tokens are signed with the generated secret kept in the database")

    async def _ping_websockets(self) -> None:
        """Ping every WebSocket; those without a pong ``ws_ping_timeout`` later are closed.

        In slices (``tasks.sliced``): one turn of the loop never holds every connection's ping.
        """
        pinged_at = time.monotonic()
        connections = list(self.registry.connections)
        pinged = [conn for conn, sent in zip(connections, await sliced(connections, lambda conn: conn.ping())) if sent]
        if pinged:
            timeout = min(self.config.ws_ping_timeout, self.config.ws_ping_interval)
            tornado.ioloop.IOLoop.current().call_later(
                timeout, lambda: spawn(self._check_pongs(pinged, pinged_at), name="ws.pongs"))

    @staticmethod
    async def _check_pongs(pinged: List[Connection], pinged_at: float) -> None:
        def check(conn: Connection) -> None:
            try:
                conn.check_pong(pinged_at)
            except Exception:
                log.exception("closing a WebSocket that missed its pong")
        await sliced(pinged, check)

    async def _beat(self) -> None:
        """One timer for every SSE stream's ``: ping`` comment (not one timer per connection), in slices."""
        await sliced(list(self.registry.connections), lambda conn: conn.heartbeat())

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.notifications.prune()
            except Exception:
                log.exception("pruning notifications failed")
            try:
                await self.sessions.prune()
            except Exception:
                log.exception("pruning refresh tokens failed")
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Finish queued writes, disconnect the broker, close the database."""
        self.closing = True
        self.monitor.stop()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.poll_presence.stop()
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._pinger is not None:
            self._pinger.stop()
        if self._prune_task is not None:
            self._prune_task.cancel()
        self.presence.close()
        await self.chat.close()
        self.uploads.close()
        try:
            await self.hub.stop()
        except Exception:
            log.exception("stopping the broker")
        await self.push.close()
        await self.webhooks.close()
        self.dbx.close()
        self.auth.close()
        if self.external is not None:
            self.external.close()


def build_services(config: Config) -> Services:
    """Wire the services for ``config`` (nothing connects until ``start``)."""
    origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    db = init_db(config.database_url, max_connections=max(config.db_threads, 8) + 4)
    dbx = DatabaseExecutor(db, readers=config.db_threads)
    metrics = Metrics(process=str(config.worker))
    registry = ConnectionRegistry(metrics)
    broker = create_broker(config.broker_url, origin, presence_ttl=config.presence_ttl,
                           database_url=config.database_url, prefix=config.broker_prefix,
                           routing=config.routing, shards=config.broker_shards,
                           shard_linger=config.broker_shard_linger)
    hub = Hub(registry, broker)
    # Without --jwt-secret, start() replaces this unguessable stand-in with the database's secret.
    auth = AuthService(config.jwt_secret or secrets.token_urlsafe(48), config.token_ttl, config.service_token,
                       config.password_hash_profile,
                       previous_secret=config.jwt_secret_previous, ticket_ttl=config.ticket_ttl,
                       hash_threads=config.hash_threads, hash_queue=config.hash_queue,
                       hash_per_address=config.hash_per_address,
                       service_token_failures_per_minute=config.service_token_failures_per_address_per_minute)
    users = UserService(dbx, auth, hub, config.login_failures_per_minute,
                        config.login_failures_per_address_per_minute, config.registrations_per_address_per_minute,
                        config.logins_per_address_per_minute)
    sessions = SessionService(dbx, auth, users, hub, registry, config.refresh_ttl, config.token_expiring_notice,
                              RefreshLimits(config.refreshes_per_address_per_minute,
                                            config.refreshes_per_session_per_minute, config.refresh_reuse_window))
    # Notification preferences and Web Push (issue 11): what notifications and chat consult
    # The presence service reads preferences and hears when sharing changes: built next, called late.
    preferences = PreferenceService(dbx, hub, config.max_muted_types,
                                    on_share_presence=lambda user_id, shares: presence.sharing_changed(user_id, shares))
    push = PushService(config, dbx, hub, preferences, metrics)
    notifications = NotificationService(dbx, hub, preferences, push.offer, config.replay_limit,
                                        config.notification_retention_days, config.test_notifications_per_minute)
    # Webhooks (issue 23): the hooks are given only when on, so a send does no extra work when off.
    webhooks = WebhookService(config, dbx, hub, preferences, metrics)
    # Presence (issue 25): co-members hear when a user comes online or goes offline; with webhooks on,
    # the same moments feed user.online/user.offline.
    presence = PresenceService(dbx, hub, preferences, config.presence_grace)
    tell_webhooks = webhooks.presence_changed if webhooks.enabled else None

    def on_online(user_id: int, online: bool) -> None:
        presence.changed(user_id, online)
        if tell_webhooks is not None:
            tell_webhooks(user_id, online)
    uploads = UploadService(dbx, LocalUploadStore(config.upload_dir), lambda: auth.secret, UploadLimits(
        config.max_upload_bytes, config.upload_quota_bytes, config.upload_url_ttl, config.orphan_upload_ttl,
        timeout=config.upload_timeout))
    chat = ChatService(dbx, hub, users, notifications, preferences,
                       MessageQuota(dbx, config.messages_per_user_per_day), uploads, push.offer,
                       config.max_message_length, config.rate_limit_per_second, config.rate_limit_burst,
                       ChatLimits(config.max_group_members, config.groups_per_hour, config.typing_interval,
                                  config.mark_read_interval),
                       outbox=webhooks.message_rows if webhooks.enabled else None,
                       on_read_stored=webhooks.read_row if webhooks.enabled else None,
                       edit_window=config.edit_window, presence=presence)
    # Every control message between processes, to the one service that applies it (Hub.start)
    control = ControlDispatch(ControlHandlers(
        sessions_revoked=sessions.on_sessions_revoked,
        token_version_changed=sessions.on_token_version_changed,
        user_changed=sessions.on_user_changed,
        ticket_used=sessions.on_ticket_used,
        preferences_changed=preferences.on_preferences_changed,
        chat_mute_changed=preferences.on_chat_mute_changed,
        subscriptions_changed=preferences.on_subscriptions_changed,
        members_changed=chat.on_members_changed,  # issue 22
    ))
    admission = StreamAdmission(registry, config.max_connections_per_user, config.max_handshakes_per_second,
                                config.handshake_burst, config.failed_stream_auths_per_address_per_minute,
                                config.max_connections_per_address, config.concurrent_opens)
    metrics_hub = MetricsHub(metrics, config.metrics_dir or None)
    monitor = Monitor(metrics_hub, config.admin_sample_seconds,
                      dbx.ping, broker.ping)
    poll_presence = PollPresence(hub, config.poll_presence_grace)
    external = ExternalAuth.from_config(config, users)  # None in builtin mode; ValueError for a bad setup
    return Services(config=config, db=db, dbx=dbx, registry=registry, broker=broker, hub=hub, auth=auth,
                    users=users, notifications=notifications, chat=chat, sessions=sessions, origin=origin,
                    metrics=metrics_hub, monitor=monitor, poll_presence=poll_presence, admission=admission,
                    reads=ReadLimit(config.reads_per_user_per_second, config.reads_burst),
                    preferences=preferences, push=push, webhooks=webhooks,
                    open_state=OpenStateBatcher(dbx, broker.distributed),
                    directory=UserDirectory(dbx, users, config.user_search, config.user_searches_per_minute),
                    search=MessageSearch(dbx, users, config.message_searches_per_minute), uploads=uploads,
                    service_api=ServiceApi(dbx, users, sessions, chat, notifications, preferences, hub,
                                           config.max_publish_external_ids),
                    groups=GroupService(dbx, chat, users, notifications, config.group_changes_per_minute),
                    presence=presence,
                    listeners=HubListeners(control, chat.admitted, chat.forget_members, on_online),
                    ids_in_commit_order=not is_postgres(db) or not broker.distributed,
                    external=external)
