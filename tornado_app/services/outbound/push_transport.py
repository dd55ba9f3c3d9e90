"""Where a Web Push may go, and how it gets there: one URL parser, checked addresses, no redirects.

A push endpoint is a URL a browser hands us and the server later POSTs to: hostile input that
makes us send requests (request forgery). Two parsers reading one string differently is the
classic hole (``https://127.0.0.2\\@fcm.googleapis.com/x``: ``urllib.parse`` sees Google,
urllib3 connects to 127.0.0.2), so the endpoint is read by one parser only, urllib3's
``parse_url``, and the request goes to the host, port and path it returned:

- subscribing (``parse_endpoint``): printable ASCII only (no whitespace, control characters,
  backslash), ``https``, no userinfo, no fragment, a DNS name (no IP literal) on
  ``--push-hosts``, port 443;
- sending (``resolve`` then ``post``): the name is resolved once, every address must be
  public (not loopback, private, link-local, multicast, reserved, unspecified), and the
  connection goes to that checked address while TLS and ``Host`` keep the endpoint's name,
  so a DNS answer that changes between check and connect is never used; a redirect is an
  answer like any other (never followed).

``--push-allow-http`` (a local push service, tests) allows ``http``, IP literals, any port
and non-public addresses; the character, userinfo and fragment rules hold always.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import List, NamedTuple, Optional, Tuple, Union

import certifi
import urllib3
from urllib3.exceptions import LocationParseError, NewConnectionError
from urllib3.util import parse_url

from ...errors import ValidationError

HTTPS_PORT = 443
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")  # no space, control character or non-ASCII
LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PushRefused(Exception):
    """A push that must not be sent (its host resolves to a non-public address, or no longer validates)."""


class PushTarget(NamedTuple):
    """An endpoint as urllib3 reads it: what the push connects to and asks for."""

    scheme: str  # "https" ("http" only with --push-allow-http)
    host: str  # lower case; an IP literal (no brackets) only with --push-allow-http
    port: int
    path: str  # the request target: path and query, as parse_url normalised them

    @property
    def netloc(self) -> str:
        """``host[:port]`` for the ``Host`` header and the VAPID audience (port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = HTTPS_PORT if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """The VAPID ``aud`` claim: the endpoint's origin."""
        return f"{self.scheme}://{self.netloc}"


def _refuse(message: str) -> ValidationError:
    return ValidationError(message, "invalid_subscription")


def _ip_literal(host: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _dns_name(host: str, strict: bool) -> bool:
    labels = host.split(".")
    if not all(LABEL.fullmatch(label) for label in labels):
        return False
    # Strictly a public name: two labels at least, and a top-level label that starts with a
    # letter, so numeric spellings of addresses that resolvers accept (2130706433, 127.1,
    # 0x7f.1) are no names.
    return not strict or (len(labels) >= 2 and labels[-1][0].isalpha())


def parse_endpoint(endpoint, allow_http: bool, hosts: tuple) -> PushTarget:
    """Parse and check a push endpoint (rules in the module docstring). Raises ValidationError."""
    if not isinstance(endpoint, str) or not PRINTABLE_ASCII.fullmatch(endpoint):
        raise _refuse("'endpoint' must be a URL of printable ASCII characters (no spaces or control characters)")
    if "\\" in endpoint:
        raise _refuse("'endpoint' must not contain a backslash")
    try:
        url = parse_url(endpoint)
    except (LocationParseError, ValueError):
        raise _refuse("'endpoint' is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    authority = AUTHORITY.match(endpoint)
    scheme = url.scheme
    if scheme is None or scheme not in schemes or not url.host or not authority:
        raise _refuse("'endpoint' must be an https:// URL")
    if url.auth is not None or "@" in authority.group(1):
        raise _refuse("'endpoint' must not carry a user name or password")
    if url.fragment is not None:
        raise _refuse("'endpoint' must not have a #fragment")
    host = url.host.lower()
    literal = _ip_literal(host)
    if not allow_http:
        # The server POSTs to this URL: only the browsers' push services (no requests to
        # internal hosts on a user's say-so).
        if "*" not in hosts and not any(host == h or host.endswith("." + h) for h in hosts):
            raise _refuse("'endpoint' is not on a known push service")
        if literal is not None or not _dns_name(host, strict=True):
            raise _refuse("'endpoint' must name a public host (a DNS name, not an IP address)")
        if url.port not in (None, HTTPS_PORT):
            raise _refuse("'endpoint' must use port 443")
    elif literal is None and not _dns_name(host, strict=False):
        raise _refuse("'endpoint' must name a host or an IP address")
    port = url.port or (HTTPS_PORT if scheme == "https" else 80)
    return PushTarget(scheme, str(literal) if literal is not None else host, port, url.request_uri)


def is_public(address: str) -> bool:
    """Whether an address a name resolved to may receive a push (IPv4 inside IPv6 checked as IPv4)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        return is_public(str(ip.ipv4_mapped))  # ::ffff:a.b.c.d is a.b.c.d
    if ip.version == 6:
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(str(embedded)):
            return False
    return ip.is_global and not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def resolve(target: PushTarget, allow_private: bool) -> List[str]:
    """The addresses to connect to, resolved once. Raises PushRefused for a name that resolves
    to no address or to any non-public one (unless ``allow_private``). Blocking: call it on a thread."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise PushRefused("the host does not resolve") from None
    # str(): the first item of a socket address (an IPv4 or IPv6 text; typeshed also allows an int)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise PushRefused("the host does not resolve")
    if not allow_private and not all(is_public(a) for a in addresses):
        # All of them: a name with one public and one internal address would reach inside.
        raise PushRefused("the host resolves to a non-public address")
    return addresses


def post(target: PushTarget, addresses: List[str], body: bytes, headers: dict,
         timeout: float) -> Tuple[int, Optional[str]]:
    """POST ``body`` to the first address that accepts a connection: ``(status, Retry-After)``.

    No redirects, no retries (the caller retries with backoff), the answer's body unread.
    Raises urllib3 errors or OSError (their messages may quote the path: never log them).
    """
    headers = {**headers, "Host": target.netloc}
    for i, address in enumerate(addresses):
        pool = _pool(target, address, timeout)
        try:
            response = pool.urlopen("POST", target.path, body=body, headers=headers, redirect=False,
                                    retries=False, assert_same_host=False, preload_content=False)
            response.close()
            return response.status, response.headers.get("Retry-After")
        except NewConnectionError:
            if i == len(addresses) - 1:
                raise
        finally:
            pool.close()
    raise PushRefused("no address")  # not reached: addresses is never empty


def _pool(target: PushTarget, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    """A one-connection pool to the checked ``address``; TLS checks the endpoint's host name."""
    limit = urllib3.Timeout(total=timeout)
    if target.scheme == "http":
        return urllib3.HTTPConnectionPool(address, port=target.port, timeout=limit, retries=False, maxsize=1)
    return urllib3.HTTPSConnectionPool(address, port=target.port, timeout=limit, retries=False, maxsize=1,
                                       cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
                                       server_hostname=target.host)
