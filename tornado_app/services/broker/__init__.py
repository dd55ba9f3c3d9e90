"""Brokers between processes: memory (one process), Redis pub/sub, PostgreSQL LISTEN/NOTIFY."""
from .base import Broker, BrokerUnavailable, create_broker

__all__ = ["Broker", "BrokerUnavailable", "create_broker"]
