"""Meteor's login handlers (``resume``, ``password``) and what a successful login does.

:func:`run_login` is the body of the ``login`` method (and of ``createUser`` and
``resetPassword``, which log in too): it runs the handlers in Meteor's order (``resume``
first), and on success stores the connection's token (:data:`~.revocation.logins`), sets the
connection's user (every subscription re-runs) and fires Django's ``user_logged_in``; on
failure it fires ``user_login_failed`` (credentials without the password or token) and
raises the handler's :class:`~ddpctl.ddp.errors.MeteorError`.

Errors (Meteor 3): ``400 Match failed`` for a badly shaped option, ``400 Unrecognized
options for login request`` when no handler applies, ``403 Something went wrong. Please
check your credentials.`` for an unknown user or a wrong password (Meteor 2's ``User not
found``, ``Incorrect password``, ``User has no password set`` with
``DDPCTL_ACCOUNTS_AMBIGUOUS_ERRORS = False``), and for ``resume``: ``403 You've been logged
out by the server. Please log in again.`` (unknown or revoked token) or ``403 Your session
has expired. Please log in again.``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import authenticate, get_backends
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.utils import timezone

from ..ddp.errors import MeteorError
from ..invocation import MethodInvocation
from . import conf
from .hashers import verify_digest
from .lookup import find_user, username_field
from .models import LoginToken
from .revocation import logins
from .tokens import Issued, expires_at, hash_token, is_valid, issue, token_result
from .validation import check_password_option, check_string, check_user_selector, match_failed

__all__ = ["LoginResult", "account_error", "run_login", "log_in", "password_handler", "resume_handler",
           "LOGGED_OUT", "SESSION_EXPIRED"]

logger = logging.getLogger(__name__)

LOGGED_OUT = "You've been logged out by the server. Please log in again."
SESSION_EXPIRED = "Your session has expired. Please log in again."
AMBIGUOUS = "Something went wrong. Please check your credentials."


def account_error(message: str, code: int = 403) -> MeteorError:
    """Meteor's ``Accounts._handleError``: the ambiguous 403 unless Meteor 2's messages are on."""
    return MeteorError(code, AMBIGUOUS if conf.ambiguous_errors() else message)


@dataclass
class LoginResult:
    """What a handler decided: a user and a token (``issued`` new, or an existing ``token``
    with its row) or an ``error``; ``credentials`` is what ``user_login_failed`` gets."""

    type: str
    user: Any = None
    issued: Issued | None = None
    error: MeteorError | None = None
    credentials: dict[str, Any] = field(default_factory=dict)
    failure_signalled: bool = False  # Django's authenticate() already sent user_login_failed


def _selector_credentials(selector: Any) -> dict[str, Any]:
    if isinstance(selector, dict):
        return {k: v for k, v in selector.items() if k in ("id", "username", "email") and isinstance(v, str)}
    return {}


def resume_handler(options: dict[str, Any]) -> LoginResult | None:
    """``{resume: token}``: the token's user, if the token is known, unexpired and valid."""
    if not options.get("resume"):
        return None
    result = LoginResult("resume", credentials={"token": "********"})
    try:
        token = check_string(options["resume"], "resume")
    except MeteorError as exc:
        result.error = exc
        return result
    row = LoginToken.objects.select_related("user").filter(hashed_token=hash_token(token)).first()
    if row is None:
        result.error = MeteorError(403, LOGGED_OUT)
        return result
    result.user = row.user
    now = timezone.now()
    if now >= expires_at(row.when):
        row.delete()  # it can never log in again
        result.error = MeteorError(403, SESSION_EXPIRED)
    elif not is_valid(row, row.user, now):  # deactivated, or the password changed
        row.delete()
        result.error = MeteorError(403, LOGGED_OUT)
    else:
        result.issued = Issued(row, token)
    return result


def _model_backend_allows(user: Any) -> str | None:
    """The dotted path of the first configured ``ModelBackend`` that lets ``user`` log in
    (``user_can_authenticate``: ``is_active``), else ``None``: a digest is checked against
    Django's stored hash, which only those backends use."""
    for backend in get_backends():
        if isinstance(backend, ModelBackend) and backend.user_can_authenticate(user):
            return f"{type(backend).__module__}.{type(backend).__qualname__}"
    return None


def password_handler(options: dict[str, Any]) -> LoginResult | None:
    """``{user: {id}|{username}|{email}, password: digest object | string}``."""
    if not options.get("password"):
        return None
    result = LoginResult("password", credentials=_selector_credentials(options.get("user")))
    try:
        if not set(options) <= {"user", "password", "code"} or "user" not in options:
            raise match_failed("login options: expected {user, password[, code]}")
        selector = check_user_selector(options["user"])
        secret, is_digest = check_password_option(options["password"])
        if "code" in options:
            check_string(options["code"], "code", non_empty=True)
    except MeteorError as exc:
        result.error = exc
        return result
    user = find_user(selector)
    if is_digest:
        if user is None:
            result.error = account_error("User not found")
        elif not user.has_usable_password():
            result.user, result.error = user, account_error("User has no password set")
        else:
            backend = _model_backend_allows(user)
            result.user = user
            if backend is None:  # inactive (or no backend that checks Django's hashes)
                result.error = account_error("User not found")
            elif not verify_digest(secret, user.password):
                result.error = account_error("Incorrect password")
            else:
                user.backend = backend
        return result
    # Plaintext (other DDP clients): every authentication backend gets its say, and a hash
    # that a Meteor hasher did not make is upgraded as at a Django login.
    name = user.get_username() if user is not None else selector.get("username")
    authenticated = None
    if name is not None:
        authenticated = authenticate(None, **{username_field(): name, "password": secret})
        result.failure_signalled = authenticated is None
    if authenticated is not None and (user is None or authenticated.pk == user.pk):
        result.user = authenticated
    else:
        result.user = user
        result.error = account_error("User not found" if user is None else "Incorrect password")
    return result


HANDLERS: list[tuple[str, Callable[[dict[str, Any]], LoginResult | None]]] = [
    ("resume", resume_handler), ("password", password_handler)]


def log_in(invocation: MethodInvocation, user: Any, issued: Issued) -> dict[str, Any]:
    """Log the connection in as ``user`` with ``issued``: ``{id, token, tokenExpires}``."""
    if invocation.connection is not None:
        logins.set(invocation.connection, user.pk, issued.row.pk)
    invocation.set_user_id(user.pk)
    user_logged_in.send(sender=type(user), request=None, user=user)
    return token_result(user.pk, issued.token, issued.row.when)


def run_login(invocation: MethodInvocation, attempt: Callable[[], LoginResult | None]) -> dict[str, Any]:
    """Run ``attempt`` (a handler or a method's own login) and conclude like Meteor's
    ``_attemptLogin``: the login result with its ``type``, or the error raised."""
    try:
        result = attempt()
    except MeteorError as exc:
        result = LoginResult("", error=exc)
    if result is None:
        result = LoginResult("", error=MeteorError(400, "Unrecognized options for login request"))
    if result.error is None and result.user is None:
        result.error = MeteorError(400, "A login handler should return a result or undefined")
    if result.error is not None:
        if not result.failure_signalled:
            user_login_failed.send(sender=__name__, credentials=result.credentials, request=None)
        logger.info("login failed (%s): %s", result.type or "no handler", result.error.message)
        raise result.error
    issued = result.issued or issue(result.user)
    reply = log_in(invocation, result.user, issued)
    reply["type"] = result.type
    return reply


def login_with(options: dict[str, Any]) -> LoginResult | None:
    """The first handler's result for ``options`` (``None``: no handler applies)."""
    for _name, handler in HANDLERS:
        result = handler(options)
        if result is not None:
            return result
    return None
