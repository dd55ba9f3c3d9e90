"""Outbound: what Squall sends to other servers on a user's behalf.

- ``PushService``: VAPID keys, subscriptions, Web Push to users with no stream open anywhere,
  in a bounded pool.
- ``push_transport``: where a push may go (one URL parser, checked addresses, no redirects).
- ``WebhookService``: signed webhooks to the product's backend from an outbox table written
  with what caused each event (issue 23); ``webhook_store``: the outbox's fast paths inside
  the send path's transaction.

Uses ``storage``, ``operations`` and ``delivery``.
"""
from .push import PushService
from .push_transport import PushRefused, PushTarget
from .webhooks import WebhookService

__all__ = ["PushService", "PushRefused", "PushTarget", "WebhookService"]
