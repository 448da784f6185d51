"""Trusted proxies: the client's address and scheme behind reverse proxies.

A reverse proxy tells the server who its client was in ``X-Forwarded-For`` (and
``X-Forwarded-Proto``, ``X-Forwarded-Host``) or in RFC 7239's ``Forwarded`` header.  Any
client can send those headers too, so they are believed only hop by hop, from the right
(the hop nearest to the server) to the left, and only while the hop that reported an entry
is trusted:

* ``count`` (``ddpctl serve --forwarded-count N``, env ``DDPCTL_FORWARDED_COUNT`` or
  Meteor's ``HTTP_FORWARDED_COUNT``): the N hops nearest to the server are trusted,
  whatever their address: with one proxy in front, N = 1 and the client is the last entry
  of ``X-Forwarded-For``, as Meteor's ``livedata_server.js`` ``clientAddress`` computes it
  (``forwardedFor[length - HTTP_FORWARDED_COUNT]``);
* ``networks`` (``--trusted-proxy ADDR-or-CIDR``, repeatable, env
  ``DDPCTL_TRUSTED_PROXIES``, comma-separated): any hop whose address is in one of them is
  trusted (nginx's ``set_real_ip_from`` with ``real_ip_recursive on``).

The default trusts none: the peer address of the TCP connection is the client, and the
headers are ignored.  Entries to the left of the first untrusted hop are never read, so a
client cannot spoof its address by sending its own ``X-Forwarded-For``.  When a trusted hop
reported something that is not an IP address (``unknown``, RFC 7239 obfuscated identifiers
like ``_hidden``, garbage), the walk stops at that hop: the client is the last address known
(the proxy's).  When every entry is trusted, the leftmost is the client (Meteor answers
``null`` when the header has fewer entries than ``HTTP_FORWARDED_COUNT``; a WSGI
``REMOTE_ADDR`` needs an address, and that entry was reported by a trusted proxy).

Which headers your proxies write (``header``: ``--forwarded-header``, env
``DDPCTL_FORWARDED_HEADER``): ``"x-forwarded"`` (the default, what Meteor reads:
``X-Forwarded-For``, ``-Proto``, ``-Host``) or ``"forwarded"`` (RFC 7239: ``for=``,
``proto=``, ``host=``).  Only that family is read: a proxy passes the other one through
untouched, so a client could otherwise write it whole.  The scheme and the host are those
reported by the outermost trusted hop; ``X-Forwarded-Host`` from an untrusted peer is
removed, so Django's ``USE_X_FORWARDED_HOST`` only ever sees a trusted proxy's value.

:meth:`ProxyPolicy.apply` rewrites a WSGI environ once (``REMOTE_ADDR``,
``wsgi.url_scheme``; the peer's own address stays under :data:`PEER_ADDRESS`), so Django's
``request.META``, DDP's ``client_address``, rate limits, ``ddpctl conns ls``, Origin and
Host checks and ``ROOT_URL`` all see the same client.  Pure: no I/O.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .header_lists import split_outside_quotes

__all__ = ["HEADERS", "PEER_ADDRESS", "Forwarded", "ProxyPolicy", "parse_address", "parse_forwarded",
           "split_list"]

logger = logging.getLogger(__name__)

PEER_ADDRESS = "ddpctl.peer_address"  # environ key: the TCP peer's own address
TRUSTED_PEER = "ddpctl.trusted_peer"  # environ key: True if the peer is a trusted proxy
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEMES = ("http", "https")
HEADERS = ("x-forwarded", "forwarded")  # the header families a policy may read


@dataclass(frozen=True)
class Forwarded:
    """What :meth:`ProxyPolicy.resolve` found: ``client`` (an IP address as text),
    ``scheme`` (``"http"``/``"https"``), ``host`` (a ``Host`` value or ``None``: the
    request's own) and ``trusted_peer`` (whether the TCP peer is a trusted proxy)."""

    client: str
    scheme: str
    host: str | None
    trusted_peer: bool


def parse_address(value: str) -> str | None:
    """The IP address in one ``X-Forwarded-For`` entry or ``Forwarded`` ``for=`` value,
    normalised (``"1.2.3.4"``, ``"2001:db8::1"``); ``None`` for anything else.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443`` (RFC 7239 6: ``node = nodename [ ":" node-port ]``)."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1:]
        if rest and not (rest.startswith(":") and _is_port(rest[1:])):
            return None
        text = text[1:end]
        if ":" not in text:
            return None  # brackets are for IPv6 only
    elif text.count(":") == 1:
        text, port = text.split(":")
        if not _is_port(port):
            return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    # RFC 7239 6: node-port = port / obfport; obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")
    if text.isascii() and text.isdigit() and len(text) <= 5:
        return True
    return len(text) > 1 and text[0] == "_" and all(
        c.isascii() and (c.isalnum() or c in "._-") for c in text[1:])


def split_list(value: str) -> list[str]:
    """A comma-separated header value split at the commas outside quoted strings (RFC 9110
    5.6.1), each element stripped; an unterminated quote runs to the end (one malformed
    element)."""
    return [part.strip() for part in split_outside_quotes(value, ",")]


def _plain_list(value: Any) -> list[str]:
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def _element(text: str) -> dict[str, str] | None:
    """One ``Forwarded`` element (``for=...;proto=...``) as lower-cased parameter names to
    values; ``None`` if malformed (RFC 7239 4: ``forwarded-pair *( ";" forwarded-pair )``)."""
    pairs: dict[str, str] = {}
    for pair in split_outside_quotes(text, ";"):
        name, sep, value = pair.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if not sep or not name or not set(name) <= _TCHAR or name in pairs:
            return None
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                return None
            inner, out, escaped = value[1:-1], [], False
            for char in inner:
                if escaped:
                    out.append(char)
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    return None
                else:
                    out.append(char)
            if escaped:
                return None
            value = "".join(out)
        elif not value or not set(value) <= _TCHAR:
            return None
        pairs[name] = value
    return pairs or None


def parse_forwarded(value: str) -> list[dict[str, str] | None]:
    """An RFC 7239 ``Forwarded`` header: one entry per element, left (the client's side)
    to right; a malformed element is ``None`` (it stops a walk through trusted hops)."""
    return [_element(part) for part in split_list(value)]


def _network(entry: str) -> IPNetwork:
    text = entry.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")] + text[text.index("]") + 1:]
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid trusted proxy {entry!r}: use an IP address or a CIDR network "
                         "(10.0.0.0/8, 2001:db8::/32)") from None


@dataclass(frozen=True)
class ProxyPolicy:
    """Which hops are trusted to report the client: the ``count`` nearest ones, and any
    whose address is in ``networks``; ``header``: which family they write (:data:`HEADERS`).
    ``ProxyPolicy()`` trusts none."""

    count: int = 0
    networks: tuple[IPNetwork, ...] = ()
    header: str = "x-forwarded"

    @classmethod
    def parse(cls, count: int | str | None = None, proxies: Iterable[str] = (),
              header: str | None = None) -> ProxyPolicy:
        """From option values: ``count`` (``None``/``""``: 0), addresses or CIDRs (each
        entry may itself be comma-separated) and the header family (``None``:
        ``"x-forwarded"``).  ``ValueError`` naming a bad value."""
        family = (header or "x-forwarded").strip().lower()
        if family not in HEADERS:
            raise ValueError(f"invalid forwarded header {header!r}: use 'x-forwarded' or 'forwarded'")
        bad = f"invalid forwarded count {count!r}: use a number of proxies (0 or more)"
        if count is None or count == "":
            number = 0
        else:
            try:
                number = int(count)
            except ValueError:
                raise ValueError(bad) from None
            if number < 0:
                raise ValueError(bad)
        networks = tuple(_network(part) for entry in proxies for part in entry.split(",") if part.strip())
        return cls(number, networks, family)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ProxyPolicy:
        """``DDPCTL_FORWARDED_COUNT`` (else Meteor's ``HTTP_FORWARDED_COUNT``),
        ``DDPCTL_TRUSTED_PROXIES`` and ``DDPCTL_FORWARDED_HEADER``."""
        count = environ.get("DDPCTL_FORWARDED_COUNT") or environ.get("HTTP_FORWARDED_COUNT")
        return cls.parse(count, [environ.get("DDPCTL_TRUSTED_PROXIES", "")],
                         environ.get("DDPCTL_FORWARDED_HEADER"))

    @property
    def trusts_any(self) -> bool:
        return self.count > 0 or bool(self.networks)

    def _trusted(self, hop: int, address: str | None) -> bool:
        if hop < self.count:
            return True
        if address is None or not self.networks:
            return False
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def resolve(self, peer: str | None, headers: Mapping[str, Any], scheme: str = "http") -> Forwarded:
        """The client behind ``peer`` (the TCP peer's address), from the request's WSGI
        ``headers`` (``HTTP_X_FORWARDED_FOR``, ``HTTP_FORWARDED``...) and its own ``scheme``."""
        peer_ip = parse_address(peer) if peer else None
        client = peer_ip or peer or ""
        if not self._trusted(0, peer_ip):
            return Forwarded(client, scheme, None, False)
        forwarded = headers.get("HTTP_FORWARDED") if self.header == "forwarded" else None
        # Each entry: (address or None, scheme or None, host or None), left to right.
        entries: list[tuple[str | None, str | None, str | None]]
        if self.header == "forwarded":
            entries = []
            for element in parse_forwarded(forwarded) if forwarded else []:
                if element is None:
                    entries.append((None, None, None))
                else:
                    entries.append((parse_address(element.get("for", "")), element.get("proto"),
                                    element.get("host")))
            protos: list[str] = []
            hosts: list[str] = []
        else:
            # Plain comma lists (no quoting: a client's stray quote must not hide the
            # entries the proxies appended after it).
            values = _plain_list(headers.get("HTTP_X_FORWARDED_FOR"))
            entries = [(parse_address(v), None, None) for v in values]
            protos = _plain_list(headers.get("HTTP_X_FORWARDED_PROTO"))
            hosts = _plain_list(headers.get("HTTP_X_FORWARDED_HOST"))
        hop = 0  # hops walked: entries[-hop] is the address the last trusted hop reported
        current = peer_ip
        while hop < len(entries) and self._trusted(hop, current):
            address = entries[-1 - hop][0]
            if address is None:  # unknown, obfuscated or malformed: stop at the proxy
                break
            hop += 1
            current = address
        if hop == 0 and not entries:
            hop_scheme = protos[-1] if protos else None
            host = hosts[-1] if hosts else None
        else:
            # The outermost trusted hop is the one that reported entries[-hop] (or, when the
            # walk stopped at once, the peer itself: entries[-1] describes its client).
            index = max(hop, 1)
            if self.header == "forwarded":
                _, hop_scheme, host = entries[-index]
            else:
                hop_scheme = protos[-index] if len(protos) >= index else (protos[0] if protos else None)
                host = hosts[-index] if len(hosts) >= index else (hosts[0] if hosts else None)
        if hop_scheme is not None and hop_scheme.strip().lower() in _SCHEMES:
            scheme = hop_scheme.strip().lower()
        return Forwarded(current or client, scheme, host.strip() if host else None, True)

    def apply(self, environ: MutableMapping[str, Any]) -> None:
        """Rewrite the WSGI ``environ`` once (later calls do nothing): ``REMOTE_ADDR`` the
        client, ``wsgi.url_scheme`` its scheme, ``HTTP_X_FORWARDED_HOST`` the trusted
        proxy's single value (removed if the peer is not trusted); the peer's own address
        under :data:`PEER_ADDRESS`, whether it is trusted under :data:`TRUSTED_PEER`."""
        if PEER_ADDRESS in environ:
            return
        peer = environ.get("REMOTE_ADDR")
        environ[PEER_ADDRESS] = peer
        if not self.trusts_any:
            environ[TRUSTED_PEER] = False
            environ.pop("HTTP_X_FORWARDED_HOST", None)
            return
        result = self.resolve(peer, environ, environ.get("wsgi.url_scheme", "http"))
        environ[TRUSTED_PEER] = result.trusted_peer
        if result.client:
            environ["REMOTE_ADDR"] = result.client
        environ["wsgi.url_scheme"] = result.scheme
        if result.host:
            environ["HTTP_X_FORWARDED_HOST"] = result.host
        else:
            environ.pop("HTTP_X_FORWARDED_HOST", None)
        if result.client != peer:
            logger.debug("client %s forwarded by %s", result.client, peer)
