"""Origin checks for DDP endpoints (``/websocket`` and every ``/sockjs`` request).

A browser sends the site's cookies with any page's WebSocket, whatever site the page comes
from; the ``Origin`` header says which site that is.  A request whose ``Origin`` is not
allowed is refused with ``403`` before any DDP.  A request without ``Origin`` (a native
client, a server, a command-line tool: they carry no visitor's cookies) is allowed.

Which origins are allowed:

* by default, the site's own: an origin whose host matches ``ALLOWED_HOSTS`` (Django's
  semantics: ``"example.com"`` exactly, ``".example.com"`` the domain and its subdomains,
  ``"*"`` anything; any scheme and port; with ``DEBUG`` and an empty list, Django's
  ``.localhost``, ``127.0.0.1`` and ``[::1]``), an origin in ``CSRF_TRUSTED_ORIGINS``
  (Django's semantics: ``"https://app.example.com"`` exactly, ``"https://*.example.com"``
  the subdomains, with that scheme);
* with an explicit list (``ddpctl serve --allowed-origin``, env ``DDPCTL_ALLOWED_ORIGINS``,
  or the ``DDPCTL_ALLOWED_ORIGINS`` setting), exactly the listed origins, written as
  ``CSRF_TRUSTED_ORIGINS`` entries (``"https://app.example.com"``,
  ``"https://*.example.com"``, ``"http://localhost:3000"``), plus ``"null"`` for pages
  without an origin (``file://``, sandboxed frames) and ``"*"`` for any origin;
* always, a same-origin page: an origin equal to the request's own host (``Host``, or
  ``X-Forwarded-Host`` with ``USE_X_FORWARDED_HOST``) when that host is valid for Django
  (``ALLOWED_HOSTS``), as Django's CSRF check has it.

Refusals are logged as warnings, at most one line per :data:`LOG_INTERVAL` seconds (the
lines in between are counted in the next one).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

__all__ = ["LOG_INTERVAL", "OriginPolicy", "RefusalLog", "allowed_origins_setting", "parse_origin_list"]

logger = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between two refusal warnings, at least
_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]  # Django's, with DEBUG and no ALLOWED_HOSTS


@dataclass(frozen=True)
class _Origins:
    """A list of allowed origins, CSRF_TRUSTED_ORIGINS style."""

    exact: frozenset[str]
    subdomains: Mapping[str, tuple[str, ...]]  # scheme -> ".example.com[:port]" patterns
    anything: bool = False

    def match(self, origin: str) -> bool:
        if self.anything or origin.lower() in self.exact:
            return True
        try:
            parsed = urlsplit(origin)
        except ValueError:
            return False
        netloc = parsed.netloc.lower()
        patterns = self.subdomains.get(parsed.scheme.lower(), ())
        return any(is_same_domain(netloc, pattern) for pattern in patterns)


def _compile(entries: Iterable[str], *, special: bool) -> _Origins:
    exact: set[str] = set()
    subdomains: dict[str, list[str]] = {}
    anything = False
    for entry in entries:
        entry = entry.strip()
        if special and entry == "*":
            anything = True
        elif "*" in entry:
            parsed = urlsplit(entry)
            subdomains.setdefault(parsed.scheme.lower(), []).append(parsed.netloc.lower().lstrip("*"))
        else:
            exact.add(entry.lower())
    return _Origins(frozenset(exact), {k: tuple(v) for k, v in subdomains.items()}, anything)


def parse_origin_list(entries: Iterable[str]) -> list[str]:
    """Validate an explicit list of allowed origins; the entries, stripped.

    Each entry is ``"*"``, ``"null"``, or ``scheme://host[:port]`` where ``host`` may start
    with ``*.`` (no path, query or fragment).  Raises ``ValueError`` naming the first bad
    entry (system check ``ddpctl.E011``, ``ddpctl serve`` exits with a usage error).
    """
    result = []
    for raw in entries:
        entry = raw.strip()
        if entry in ("*", "null"):
            result.append(entry)
            continue
        try:
            parsed = urlsplit(entry)
            parsed.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError:
            parsed = None
        if (parsed is None or not parsed.scheme or not parsed.netloc or parsed.path
                or parsed.query or parsed.fragment or "@" in parsed.netloc
                or ("*" in entry and not parsed.netloc.startswith("*."))
                or parsed.netloc.count("*") > 1):
            raise ValueError(
                f"invalid allowed origin {raw!r}: use scheme://host[:port] (e.g. "
                "'https://app.example.com', 'https://*.example.com'), 'null' or '*'")
        result.append(entry)
    return result


def allowed_origins_setting() -> list[str] | None:
    """The ``DDPCTL_ALLOWED_ORIGINS`` setting: ``None`` if unset, else the validated list.

    Raises ``ValueError`` if it is not a list (or tuple) of valid origins."""
    from django.conf import settings

    value = getattr(settings, "DDPCTL_ALLOWED_ORIGINS", None)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(entry, str) for entry in value):
        raise ValueError(f"DDPCTL_ALLOWED_ORIGINS must be a list of origins, not {value!r}.")
    return parse_origin_list(value)


class OriginPolicy:
    """Decides whether a DDP request may go on, from its ``Origin`` and ``Host`` headers.

    ``explicit``: the allowed origins when set (see :func:`parse_origin_list`), replacing the
    defaults; ``allowed_hosts``, ``trusted_origins``, ``use_x_forwarded_host``: Django's
    settings of those names (``ALLOWED_HOSTS`` already with Django's DEBUG defaults).
    """

    def __init__(self, explicit: Iterable[str] | None, allowed_hosts: Iterable[str],
                 trusted_origins: Iterable[str] = (), use_x_forwarded_host: bool = False) -> None:
        self.explicit = None if explicit is None else parse_origin_list(explicit)
        self.allowed_hosts = [host.lower() for host in allowed_hosts]
        self.use_x_forwarded_host = use_x_forwarded_host
        if self.explicit is None:
            self._origins = _compile(trusted_origins, special=False)
        else:
            self._origins = _compile(self.explicit, special=True)
        self.refusals = RefusalLog()

    @classmethod
    def from_settings(cls, explicit: Iterable[str] | None = None) -> OriginPolicy:
        """The policy of the Django settings; ``explicit`` (the ``serve`` option) overrides
        ``DDPCTL_ALLOWED_ORIGINS``.  ``ValueError`` for an invalid list."""
        from django.conf import settings

        if explicit is None:
            explicit = allowed_origins_setting()
        allowed_hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed_hosts:
            allowed_hosts = _DEBUG_HOSTS
        return cls(explicit, allowed_hosts, settings.CSRF_TRUSTED_ORIGINS,
                   settings.USE_X_FORWARDED_HOST)

    @property
    def allows_any(self) -> bool:
        """True when every origin is allowed (``"*"`` in the explicit list or, by default, in
        ``ALLOWED_HOSTS``)."""
        if self.explicit is not None:
            return self._origins.anything
        return "*" in self.allowed_hosts

    def allows(self, origin: str | None, host: str | None) -> bool:
        """May a request with this ``Origin`` (``None``: no header) to this ``Host`` go on?"""
        if origin is None:
            return True
        if self._origins.match(origin):
            return True
        if origin == "null":
            return False
        try:
            parsed = urlsplit(origin)
            origin_port = parsed.port
        except ValueError:
            return False
        scheme = parsed.scheme.lower()
        origin_domain, _ = split_domain_port(parsed.netloc)
        if not scheme or not origin_domain:
            return False
        if self.explicit is None and validate_host(origin_domain, self.allowed_hosts):
            return True
        if host:
            domain, port = split_domain_port(host)
            if domain and validate_host(domain, self.allowed_hosts) and domain == origin_domain:
                default = _DEFAULT_PORTS.get(scheme)
                wanted = str(origin_port) if origin_port is not None else default
                return (port or default) == wanted
        return False

    def host_of(self, environ: Mapping[str, Any]) -> str | None:
        """The request's own host, as Django's ``HttpRequest.get_host`` reads it (unvalidated)."""
        if self.use_x_forwarded_host and environ.get("HTTP_X_FORWARDED_HOST"):
            return environ["HTTP_X_FORWARDED_HOST"].split(",")[-1].strip()
        if environ.get("HTTP_HOST"):
            return environ["HTTP_HOST"]
        name = environ.get("SERVER_NAME")
        if not name:
            return None
        port = str(environ.get("SERVER_PORT", ""))
        default = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
        return name if port in ("", default) else f"{name}:{port}"

    def check(self, environ: Mapping[str, Any]) -> bool:
        """Whether the WSGI request ``environ`` may go on; logs a refusal (rate-limited)."""
        origin = environ.get("HTTP_ORIGIN")
        if self.allows(origin, self.host_of(environ)):
            return True
        self.refusals.refused(origin, environ.get("PATH_INFO", ""), environ.get("REMOTE_ADDR"))
        return False


class RefusalLog:
    """Warnings for refused origins, at most one per ``interval`` seconds; the ones not
    logged are counted in the next line.  ``clock``: seconds, monotonic."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.total = 0
        self._suppressed = 0
        self._last: float | None = None

    def refused(self, origin: str | None, path: str, address: str | None) -> None:
        self.total += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more refused since the last report)" if self._suppressed else ""
        logger.warning("refused a DDP request from origin %r to %s (client %s): origin not allowed%s; "
                       "see --allowed-origin", origin, path, address, more)
        self._last = now
        self._suppressed = 0
