"""Hosts: every request's ``Host`` must be allowed by Django's ``ALLOWED_HOSTS``.

Django checks the host only when a view asks for it (``request.get_host()``); the Meteor
bundle, SockJS and WebSocket endpoints never asked, so any ``Host`` went through and even
became ``ROOT_URL`` in the served HTML.  :class:`HostPolicy` applies Django's own check
(``django.http.request.validate_host``, with Django's ``DEBUG`` defaults ``.localhost``,
``127.0.0.1``, ``[::1]`` when ``ALLOWED_HOSTS`` is empty) to every request, before any
routing: a host it refuses gets ``400 Bad Request`` on every path (Django's answer to a
``DisallowedHost``).

The host is read as Django's ``HttpRequest.get_host`` reads it: ``X-Forwarded-Host`` with
``USE_X_FORWARDED_HOST`` (only a trusted proxy's: :mod:`.forwarded` removes it otherwise),
else ``Host``, else ``SERVER_NAME:SERVER_PORT``.

``ROOT_URL`` (:meth:`HostPolicy.root_url`): ``--root-url`` when given (Meteor always takes
it from its ``ROOT_URL`` variable, never from a request).  Without it, the request's scheme
and host, but only when the host is matched by an ``ALLOWED_HOSTS`` entry that names it
(``example.com``, ``.example.com``): a host that passed only because the list holds ``"*"``
is whatever the client sent, so the URL then comes from the server's own address
(``SERVER_NAME:SERVER_PORT``, PEP 3333's URL reconstruction) instead.  Meteor's client
connects DDP to its page's own origin unless ``DDP_DEFAULT_CONNECTION_URL``
(``--ddp-url``) is set, so DDP keeps working either way.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.http.request import split_domain_port, validate_host

__all__ = ["DEBUG_HOSTS", "REFUSED", "HostPolicy"]

logger = logging.getLogger(__name__)

DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]  # Django's, with DEBUG and no ALLOWED_HOSTS
REFUSED = b"Bad Request: invalid Host header\n"
_LOG_INTERVAL = 10.0


class HostPolicy:
    """``allowed_hosts`` and ``use_x_forwarded_host``: Django's settings of those names
    (``ALLOWED_HOSTS`` already with Django's DEBUG defaults: see :meth:`from_settings`)."""

    def __init__(self, allowed_hosts: Iterable[str], use_x_forwarded_host: bool = False) -> None:
        self.allowed_hosts = [host.lower() for host in allowed_hosts]
        self.named_hosts = [host for host in self.allowed_hosts if host != "*"]
        self.use_x_forwarded_host = use_x_forwarded_host
        self.refused = 0
        self._last_log: float | None = None
        self._unlogged = 0

    @classmethod
    def from_settings(cls) -> HostPolicy:
        from django.conf import settings

        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = DEBUG_HOSTS
        return cls(allowed, settings.USE_X_FORWARDED_HOST)

    @property
    def wildcard(self) -> bool:
        """True when ``ALLOWED_HOSTS`` holds ``"*"`` (any host passes)."""
        return "*" in self.allowed_hosts

    def host_of(self, environ: Mapping[str, Any]) -> str:
        """The request's host as Django's ``HttpRequest._get_raw_host`` reads it (unchecked)."""
        if self.use_x_forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
            return str(environ["HTTP_X_FORWARDED_HOST"])
        if "HTTP_HOST" in environ:
            return str(environ["HTTP_HOST"])
        host = str(environ.get("SERVER_NAME", ""))
        port = str(environ.get("SERVER_PORT", ""))
        default = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
        return host if port in ("", default) else f"{host}:{port}"

    def allows_host(self, host: str) -> bool:
        """Django's ``get_host`` check of one ``Host`` value."""
        domain, _ = split_domain_port(host)
        return bool(domain) and validate_host(domain, self.allowed_hosts)

    def named(self, host: str) -> bool:
        """Is ``host`` allowed by an entry other than ``"*"``?"""
        domain, _ = split_domain_port(host)
        return bool(domain) and validate_host(domain, self.named_hosts)

    def allows(self, environ: Mapping[str, Any]) -> bool:
        """Whether the WSGI request may go on; a refusal is logged (one line per 10 s at most)."""
        host = self.host_of(environ)
        if self.allows_host(host):
            return True
        self.refused += 1
        now = time.monotonic()
        if self._last_log is not None and now - self._last_log < _LOG_INTERVAL:
            self._unlogged += 1
        else:
            more = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
            logger.warning("refused a request for host %r to %s (client %s): not in ALLOWED_HOSTS%s",
                           host, environ.get("PATH_INFO", ""), environ.get("REMOTE_ADDR"), more)
            self._last_log = now
            self._unlogged = 0
        return False

    def root_url(self, environ: Mapping[str, Any], configured: str | None = None) -> str:
        """``ROOT_URL`` for this request: ``configured`` if set, else ``scheme://host/`` from
        the request when its host is named by ``ALLOWED_HOSTS``, else from the server's
        address (see the module docstring)."""
        if configured:
            return configured
        scheme = environ.get("wsgi.url_scheme", "http")
        host = self.host_of(environ)
        if not self.named(host):
            name = str(environ.get("SERVER_NAME") or "localhost")
            if ":" in name and not name.startswith("["):
                name = f"[{name}]"
            port = str(environ.get("SERVER_PORT", ""))
            default = "443" if scheme == "https" else "80"
            host = name if port in ("", default) else f"{name}:{port}"
        return f"{scheme}://{host}/"
