"""The accounts DDP methods (accounts-base and accounts-password), registered at startup.

=====================================  =====================================================
``login(options)``                     ``{id, token, tokenExpires, type}`` (:mod:`.login`)
``logout()``                           deletes the connection's token, logs it out
``getNewToken()``                      a new token, same expiry: ``{id, token, tokenExpires}``
``removeOtherTokens()``                deletes the user's other tokens (``logoutOtherClients``)
``createUser(options)``                ``{username?, email?, password}`` -> logs in; off unless
                                       ``DDPCTL_ACCOUNTS_ALLOW_CREATE_USER``
``changePassword(old, new)``           ``{passwordChanged: true}``; other tokens deleted
``forgotPassword({email})``            e-mails a reset link (:mod:`.reset`)
``resetPassword(token, new)``          sets the password, deletes every token, logs in
=====================================  =====================================================

Passwords are Meteor's: ``{digest, algorithm: "sha-256"}`` or a plaintext string.
"""
from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.signals import user_logged_out
from django.core.exceptions import ValidationError
from django.db import transaction

from ..ddp.errors import MeteorError
from ..invocation import current_invocation
from ..methods import method
from . import conf
from .hashers import verify_digest
from .login import LoginResult, account_error, log_in, login_with, run_login
from .lookup import email_field, find_by_field, username_field
from .models import LoginToken
from .reset import send_reset_email, user_for_reset_token
from .revocation import logins
from .tokens import issue, password_mark
from .users import CurrentUser  # noqa: F401  (registers the universal ``users`` publication)
from .validation import check_password_option, check_string, match_failed

__all__ = ["login", "logout", "get_new_token", "remove_other_tokens", "create_user", "change_password",
           "forgot_password", "reset_password"]

logger = logging.getLogger(__name__)
NOT_LOGGED_IN = "You are not logged in."


def _check_object(value: Any, what: str = "options") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise match_failed(f"{what}: expected an object")
    return value


@method("login", atomic=False, sensitive_params=["resume"])  # a login token; passwords by their key
def login(options: Any) -> dict[str, Any]:
    _check_object(options)
    return run_login(current_invocation(), lambda: login_with(options))


@method("logout")
def logout() -> None:
    invocation = current_invocation()
    token_id = logins.token_id(invocation.connection)
    logins.clear(invocation.connection)
    user = None
    if invocation.user_id is not None:
        user = get_user_model()._default_manager.filter(pk=invocation.user_id).first()
        if token_id is not None:
            LoginToken.objects.filter(pk=token_id, user_id=invocation.user_id).delete()
    if user is not None:
        user_logged_out.send(sender=type(user), request=None, user=user)
    invocation.set_user_id(None)


def _current_token(invocation: Any) -> LoginToken:
    if invocation.user_id is None:
        raise MeteorError(NOT_LOGGED_IN)
    token_id = logins.token_id(invocation.connection)
    row = LoginToken.objects.select_related("user").filter(pk=token_id, user_id=invocation.user_id).first() \
        if token_id is not None else None
    if row is None:
        raise MeteorError("Invalid login token")
    return row


@method("getNewToken")
def get_new_token() -> dict[str, Any]:
    invocation = current_invocation()
    current = _current_token(invocation)
    issued = issue(current.user, when=current.when)
    return log_in(invocation, current.user, issued)


@method("removeOtherTokens")
def remove_other_tokens() -> None:
    invocation = current_invocation()
    if invocation.user_id is None:
        raise MeteorError(NOT_LOGGED_IN)
    LoginToken.objects.filter(user_id=invocation.user_id).exclude(
        pk=logins.token_id(invocation.connection)).delete()


def _validate_new_password(password: str, is_digest: bool, user: Any) -> None:
    """Django's ``AUTH_PASSWORD_VALIDATORS`` for a plaintext password (a digest hides it)."""
    if is_digest:
        return
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise MeteorError(400, " ".join(exc.messages)) from None


def _set_password(user: Any, secret: str, is_digest: bool) -> None:
    """Store a new password from Meteor's option (a digest is hashed as the password's digest)."""
    if is_digest:
        from django.contrib.auth.hashers import get_hasher

        from .hashers import MeteorDigestMixin, _Digest
        hasher = get_hasher()
        if not isinstance(hasher, MeteorDigestMixin):
            raise MeteorError(400, "This server cannot take a password digest",
                              "the first PASSWORD_HASHERS entry must be a ddpctl.accounts.hashers one")
        user.password = hasher.encode(_Digest(secret), hasher.salt())
    else:
        user.set_password(secret)
    user.save()  # (Django's AbstractBaseUser.save tells the password validators)


@method("createUser", atomic=False)
def create_user(options: Any) -> dict[str, Any]:
    invocation = current_invocation()
    _check_object(options)

    def attempt() -> LoginResult:
        if not conf.allow_create_user():
            return LoginResult("password", error=MeteorError(403, "Signups forbidden"))
        unknown = set(options) - {"username", "email", "password", "profile"}
        if unknown:
            raise match_failed(f"createUser: unexpected {sorted(unknown)}")
        username, email = options.get("username"), options.get("email")
        if username is not None:
            check_string(username, "username")
        if email is not None:
            check_string(email, "email")
        if not username and not email:
            raise MeteorError(400, "Need to set a username or email")
        secret, is_digest = check_password_option(options.get("password"))
        model = get_user_model()
        field = email_field()
        if email and field is None:
            raise MeteorError(400, "This user model has no e-mail field")
        uname_field = username_field()
        if username and find_by_field(uname_field, username) is not None:
            raise account_error("Username already exists.")
        if email and find_by_field(field, email) is not None:  # type: ignore[arg-type]
            raise account_error("Email already exists.")
        values = {}
        if uname_field == field:
            values[uname_field] = username or email
        else:
            values[uname_field] = username or email
            if email:
                values[field] = email  # type: ignore[index]
        with transaction.atomic():
            user = model(**values)
            _validate_new_password(secret, is_digest, user)
            _set_password(user, secret, is_digest)
        logger.info("created user %s through createUser", user.pk)
        return LoginResult("password", user=user)

    return run_login(invocation, attempt)


@method("changePassword")
def change_password(old_password: Any, new_password: Any) -> dict[str, bool]:
    invocation = current_invocation()
    old, old_is_digest = check_password_option(old_password)
    new, new_is_digest = check_password_option(new_password)
    if invocation.user_id is None:
        raise MeteorError(401, "Must be logged in")
    user = get_user_model()._default_manager.filter(pk=invocation.user_id).first()
    if user is None:
        raise account_error("User not found")
    if not user.has_usable_password():
        raise account_error("User has no password set")
    correct = verify_digest(old, user.password) if old_is_digest else user.check_password(old)
    if not correct:
        raise account_error("Incorrect password")
    _validate_new_password(new, new_is_digest, user)
    _set_password(user, new, new_is_digest)
    # Meteor keeps the current connection's token and deletes the others; the kept one is
    # re-marked with the new password hash (every other connection is logged out).
    current = logins.token_id(invocation.connection)
    LoginToken.objects.filter(user=user).exclude(pk=current).delete()
    LoginToken.objects.filter(pk=current, user=user).update(password_mark=password_mark(user))
    return {"passwordChanged": True}


def _root(invocation: Any) -> str:
    headers = invocation.connection.http_headers if invocation.connection is not None else {}
    proto = headers.get("x-forwarded-proto", "http").split(",")[0].strip() or "http"
    return f"{proto}://{headers.get('host', 'localhost')}"


@method("forgotPassword")
def forgot_password(options: Any) -> None:
    invocation = current_invocation()
    if not isinstance(options, dict) or set(options) != {"email"}:
        raise match_failed("forgotPassword: expected {email}")
    address = check_string(options["email"], "email")
    field = email_field()
    user = find_by_field(field, address) if field else None
    if user is None:
        raise account_error("User not found")
    send_reset_email(user, getattr(user, field), _root(invocation))  # type: ignore[arg-type]


@method("resetPassword", atomic=False)
def reset_password(token: Any, new_password: Any) -> dict[str, Any]:
    invocation = current_invocation()

    def attempt() -> LoginResult:
        check_string(token, "token")
        secret, is_digest = check_password_option(new_password)
        user = user_for_reset_token(token)
        if user is None:
            raise MeteorError(403, "Token expired")
        _validate_new_password(secret, is_digest, user)
        with transaction.atomic():
            _set_password(user, secret, is_digest)
            LoginToken.objects.filter(user=user).delete()  # a new password ends every session
        logins.clear(invocation.connection)
        return LoginResult("password", user=user)

    return run_login(invocation, attempt)
