"""The client's address: the socket peer, or what a *trusted* reverse proxy says it is.

``X-Forwarded-For`` and ``X-Real-IP`` are believed only when the peer is in
``--trusted-proxies``; otherwise anyone could pick their address (and so escape every
per-address limit, or write any address into the logs).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable


class TrustedProxies:
    """Resolves a request's client address given the trusted proxy networks."""

    def __init__(self, cidrs: Iterable[str]):
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def trusts(self, address: str) -> bool:
        """True when ``address`` is one of the trusted proxies."""
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_address(self, peer: str, headers) -> str:
        """The client address for a request from socket address ``peer`` with ``headers``.

        Walks ``X-Forwarded-For`` from the right while the hop is a trusted proxy; the first
        untrusted hop is the client. ``X-Real-IP`` is used when there is no X-Forwarded-For.
        """
        if not self.trusts(peer):
            return peer
        forwarded = headers.get("X-Forwarded-For")
        if forwarded:
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            address = peer
            while hops and self.trusts(address):
                address = hops.pop()
            return address if _valid(address) else peer
        real = (headers.get("X-Real-IP") or "").strip()
        return real if real and _valid(real) else peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False
