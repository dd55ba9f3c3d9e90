"""Integration: the product's backend talking to Squall.

- ``ServiceApi``: users by external id (upsert, delete, revoke), chats by the product's key,
  members, messages as a user or as the system, publishing to external ids.

The highest room: it may use every other one.
"""
from .service_api import ServiceApi

__all__ = ["ServiceApi"]
