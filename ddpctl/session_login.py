"""Django session login: a DDP connection opened by a logged-in Django visitor starts as that user.

Opt in with the Django setting ``DDPCTL_SESSION_LOGIN = True`` (off by default).  When the
WebSocket upgrade request (raw ``/websocket`` or SockJS) carries the session cookie
(``SESSION_COOKIE_NAME``), the session is loaded from ``SESSION_ENGINE``'s store and the
user found by Django's own :func:`django.contrib.auth.get_user`: the session's backend must
still be in ``AUTHENTICATION_BACKENDS``, the backend must return the user (``ModelBackend``
refuses inactive ones) and the session auth hash must match (a password change since the
login ends the session, ``SECRET_KEY_FALLBACKS`` apply).  Anything else leaves the
connection logged out.  Only the cookie of the upgrade request counts: a later Django
login or logout does not change an open connection.

Only turn it on with Origin checks in place (:mod:`ddpctl.origins`, on by default): the
browser sends the cookie with any page's WebSocket, so without them another site could
act as the visitor.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["session_login_enabled", "session_login_setting", "session_user_id"]

logger = logging.getLogger(__name__)


def session_login_setting() -> bool:
    """The ``DDPCTL_SESSION_LOGIN`` setting (default ``False``); ``ValueError`` unless a bool
    (system check ``ddpctl.E012``)."""
    from django.conf import settings

    value = getattr(settings, "DDPCTL_SESSION_LOGIN", False)
    if not isinstance(value, bool):
        raise ValueError(f"DDPCTL_SESSION_LOGIN must be True or False, not {value!r}.")
    return value


def session_login_enabled() -> bool:
    """Whether connections may start logged in from the session cookie (a bad setting: no)."""
    try:
        return session_login_setting()
    except ValueError:
        return False


def session_user_id(cookie_header: str | None) -> Any:
    """The primary key of the user logged in by the Django session in ``cookie_header`` (the
    HTTP ``Cookie`` header's value), or ``None`` for no session, an expired or unknown one,
    or a user the auth system no longer accepts.

    Runs queries (session store, user model): call it with a database connection available.
    What Django's ``get_user`` would write to the session (it deletes a session whose auth
    hash no longer matches) happens as on any Django request, except that a session verified
    through ``SECRET_KEY_FALLBACKS`` keeps its key: the browser still holds that cookie, and
    its next HTTP request to Django renews it.
    """
    if not cookie_header:
        return None
    from django.conf import settings
    from django.contrib.auth import get_user
    from django.http import HttpRequest
    from django.http.cookie import parse_cookie

    session_key = parse_cookie(cookie_header).get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key)
    # A new key could not reach the browser (no Set-Cookie on a WebSocket): keep this one.
    session.cycle_key = lambda: None
    request = HttpRequest()
    request.session = session
    user = get_user(request)
    if not user.is_authenticated:
        return None
    return user.pk


session_login_listeners: list[Callable[[Any, Any], None]] = []
"""Called as ``listener(connection handle, user id)`` when a connection starts logged in
from its Django session (``ddpctl.accounts`` registers one, so that a deactivated user or
a new password logs such connections out on every node, as it does token logins)."""
