"""Django's static files under ``ddpctl serve``, as ``runserver`` serves them.

With ``DEBUG`` and ``django.contrib.staticfiles`` installed, requests under a local
``STATIC_URL`` are answered by ``django.contrib.staticfiles``' own WSGI handler (the one
``runserver`` wraps its application in): files are found by the ``STATICFILES_FINDERS``
(each app's ``static/`` directory, ``STATICFILES_DIRS``), no ``collectstatic`` needed, no
database connection taken.  Without ``DEBUG`` nothing is added, as with ``runserver``: in
production run ``collectstatic`` and serve ``STATIC_ROOT`` with WhiteNoise
(``whitenoise.middleware.WhiteNoiseMiddleware`` in ``MIDDLEWARE``) or a front proxy; the
Meteor layer passes ``STATIC_URL`` paths to Django for that
(:func:`.meteor.django_resolves`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["static_files_app", "static_url_path"]

logger = logging.getLogger(__name__)
WSGIApp = Callable[..., Iterable[bytes]]


def static_url_path() -> str | None:
    """The path of a local ``STATIC_URL`` (``"/static/"``); ``None`` if unset or on another host."""
    from django.conf import settings

    url = getattr(settings, "STATIC_URL", None)
    if not url:
        return None
    parts = urlsplit(str(url))
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        return None
    return parts.path if parts.path.endswith("/") else parts.path + "/"


def static_files_app() -> tuple[WSGIApp, str] | None:
    """``(app, prefix)``: the WSGI app serving paths under ``prefix`` with
    ``django.contrib.staticfiles`` (``DEBUG`` only, as ``runserver``); else ``None``."""
    from django.apps import apps
    from django.conf import settings

    if not settings.DEBUG or not apps.is_installed("django.contrib.staticfiles"):
        return None
    prefix = static_url_path()
    if prefix is None:
        return None
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    handler = StaticFilesHandler(_not_found)
    logger.debug("serving Django's static files under %s (DEBUG)", prefix)
    return handler, prefix


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # Only reached for a path StaticFilesHandler does not handle (never under the prefix).
    body = b"Not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=UTF-8"),
                                     ("Content-Length", str(len(body)))])
    return [body]
