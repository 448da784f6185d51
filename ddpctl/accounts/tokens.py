"""Resume tokens: what ``login`` returns and ``{resume: token}`` logs in with again.

A token is Meteor's ``Random.secret()`` (43 base64url characters, 256 bits).  Only
``base64(sha256(token))`` is stored (Meteor's ``Accounts._hashLoginToken``, 44 characters),
with the login time ``when``; the token expires ``DDPCTL_ACCOUNTS_LOGIN_EXPIRATION_DAYS``
after ``when``.  A token is valid while its row exists, it has not expired, its user is
active (``is_active``, where the model has it) and the user's password hash is the one it
was issued with (``password_mark``, an HMAC of the hash keyed with ``SECRET_KEY``, like
Django's session auth hash; ``SECRET_KEY_FALLBACKS`` are accepted too).
"""
from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from ..ddp.random import random_secret
from . import conf
from .models import LoginToken

__all__ = ["hash_token", "password_mark", "password_mark_matches", "expires_at", "Issued", "issue",
           "is_valid", "token_result"]

_MARK_SALT = "ddpctl.accounts.tokens.password_mark"


def hash_token(token: str) -> str:
    """Meteor's ``Accounts._hashLoginToken``: ``base64(sha256(token))``, 44 characters."""
    return base64.b64encode(hashlib.sha256(token.encode()).digest()).decode()


def password_mark(user: Any, secret: str | None = None) -> str:
    """An HMAC of the user's password hash (hex, 64 characters)."""
    return salted_hmac(_MARK_SALT, user.password or "", secret=secret, algorithm="sha256").hexdigest()


def password_mark_matches(user: Any, mark: str) -> bool:
    """True if ``mark`` was made from the user's current password hash."""
    for secret in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        if constant_time_compare(password_mark(user, secret), mark):
            return True
    return False


def expires_at(when: datetime.datetime) -> datetime.datetime:
    return when + conf.login_expiration()


@dataclass(frozen=True)
class Issued:
    """A token as its client gets it (``token`` in clear: never stored, never logged)."""

    row: LoginToken
    token: str

    @property
    def expires(self) -> datetime.datetime:
        return expires_at(self.row.when)


def issue(user: Any, when: datetime.datetime | None = None) -> Issued:
    """Create and store a new token for ``user`` (``when`` defaults to now)."""
    token = random_secret()
    row = LoginToken.objects.create(user=user, hashed_token=hash_token(token), when=when or timezone.now(),
                                    password_mark=password_mark(user))
    return Issued(row, token)


def is_valid(row: LoginToken, user: Any, now: datetime.datetime | None = None) -> bool:
    """True if ``row`` (of ``user``) still logs in: not expired, user active, same password."""
    now = now or timezone.now()
    return (now < expires_at(row.when) and getattr(user, "is_active", True)
            and password_mark_matches(user, row.password_mark))


def token_result(user_id: Any, token: str, when: datetime.datetime) -> dict[str, Any]:
    """Meteor's login result ``{id, token, tokenExpires}`` (``tokenExpires`` goes out as an
    EJSON date); the caller adds ``type``."""
    return {"id": str(user_id), "token": token, "tokenExpires": expires_at(when)}
