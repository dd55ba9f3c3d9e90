"""The in-process broker: one process, no network; envelopes are delivered synchronously, in order."""
from __future__ import annotations

from .base import Broker


class MemoryBroker(Broker):
    """Delivers every envelope to this process only (the default for a single process)."""

    distributed = False

    def __init__(self, origin: str, **options):
        super().__init__(origin)

    async def publish(self, envelope: dict) -> None:
        """Deliver ``envelope`` to this process's receiver, synchronously and in order."""
        self._hand_over(envelope)
