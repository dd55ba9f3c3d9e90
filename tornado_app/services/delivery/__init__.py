"""Delivery: getting an event from the service that made it to every connection that wants it.

- ``Event`` (``events``): JSON built once per fan-out, with its WebSocket and SSE encodings.
- ``Connection`` (``connection``): one live connection, whatever carries it (its ``Transport``):
  cursors, replay then live, dedup, backpressure, and the one ``end(reason)`` (``EndReason``).
- ``ConnectionRegistry``: this process's live connections by user, session, chat and expiry.
- ``Hub`` and the brokers (``broker``: memory, Redis, PostgreSQL): every process gets every
  envelope; control messages between processes ride the same channel.
- ``NotificationService`` and its ``PublishWriter`` (group commit of the publish API),
  ``OpenStateBatcher`` (the first unread state of every stream opening at once),
  ``PreferenceService`` (preferences, mutes, Do Not Disturb), ``StreamAdmission`` (handshake
  rate, per-user caps), ``PollPresence`` (a long-poll's presence between polls).
- ``notification_store``: the notifications aggregate's storage (unread state, notification
  rows, replay, read and cleared state, retention, the publish API's batch, the newest ids a
  stream starts from), fast paths included; ``preference_store``: the preferences aggregate's
  (preferences, push subscription counts, chat mutes).

Uses ``storage`` and ``operations``.
"""
from .admission import StreamAdmission
from .broker import Broker, create_broker
from .connection import Connection, EndReason, Transport
from .events import Event
from .hub import Hub
from .notifications import NotificationService
from .openstate import OpenStateBatcher
from .poll_presence import PollPresence
from .preferences import PreferenceService
from .publisher import PublishWriter
from .registry import ConnectionRegistry

__all__ = ["StreamAdmission", "Broker", "create_broker", "Connection", "EndReason", "Transport", "Event", "Hub", "NotificationService",
           "OpenStateBatcher", "PollPresence", "PreferenceService", "PublishWriter", "ConnectionRegistry"]
