"""The ``DDPCTL_ACCOUNTS_*`` Django settings, read when used (tests may override them).

=====================================================  ============================================
``DDPCTL_ACCOUNTS_LOGIN_EXPIRATION_DAYS`` (90)         resume tokens expire this many days after
                                                       their login (a number > 0; float allowed)
``DDPCTL_ACCOUNTS_AMBIGUOUS_ERRORS`` (True)            Meteor 3's one "Something went wrong" 403;
                                                       False: Meteor 2's "User not found" ...
``DDPCTL_ACCOUNTS_ALLOW_CREATE_USER`` (False)          clients may call ``createUser``
                                                       (Meteor's ``forbidClientAccountCreation``)
``DDPCTL_ACCOUNTS_USER_FIELDS``                        fields of the published user document
(["username", "emails", "profile"])
``DDPCTL_ACCOUNTS_RESET_PASSWORD_URL``                 the link in reset e-mails; ``{token}`` is
("{root}/#/reset-password/{token}")                    replaced, ``{root}`` by
                                                       ``http(s)://<Host of the connection>``
``DDPCTL_ACCOUNTS_PASSWORD_MAX_LENGTH`` (256)          longest plaintext password accepted
=====================================================  ============================================
"""
from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings

__all__ = ["login_expiration", "ambiguous_errors", "allow_create_user", "user_fields",
           "reset_password_url", "password_max_length", "DEFAULT_USER_FIELDS", "KNOWN_DOCUMENT_FIELDS"]

DEFAULT_LOGIN_EXPIRATION_DAYS = 90  # Meteor's DEFAULT_LOGIN_EXPIRATION_DAYS
DEFAULT_USER_FIELDS = ("username", "emails", "profile")  # Meteor's _defaultPublishFields
KNOWN_DOCUMENT_FIELDS = frozenset(DEFAULT_USER_FIELDS)


def _get(name: str, default: Any) -> Any:
    return getattr(settings, f"DDPCTL_ACCOUNTS_{name}", default)


def login_expiration() -> datetime.timedelta:
    """How long a resume token lives; ``ValueError`` if the setting is not a positive number."""
    days = _get("LOGIN_EXPIRATION_DAYS", DEFAULT_LOGIN_EXPIRATION_DAYS)
    if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
        raise ValueError(f"DDPCTL_ACCOUNTS_LOGIN_EXPIRATION_DAYS must be a positive number, not {days!r}.")
    return datetime.timedelta(days=days)


def _bool(name: str, default: bool) -> bool:
    value = _get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"DDPCTL_ACCOUNTS_{name} must be True or False, not {value!r}.")
    return value


def ambiguous_errors() -> bool:
    """``DDPCTL_ACCOUNTS_AMBIGUOUS_ERRORS``; ``ValueError`` unless a bool."""
    return _bool("AMBIGUOUS_ERRORS", True)


def allow_create_user() -> bool:
    """``DDPCTL_ACCOUNTS_ALLOW_CREATE_USER``; ``ValueError`` unless a bool."""
    return _bool("ALLOW_CREATE_USER", False)


def user_fields() -> list[str]:
    """Names of the published user document's fields; ``ValueError`` if not a list of strings."""
    fields = _get("USER_FIELDS", list(DEFAULT_USER_FIELDS))
    if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
        raise ValueError(f"DDPCTL_ACCOUNTS_USER_FIELDS must be a list of field names, not {fields!r}.")
    return list(fields)


def reset_password_url() -> str:
    """``DDPCTL_ACCOUNTS_RESET_PASSWORD_URL``; ``ValueError`` unless a string containing ``{token}``."""
    url = _get("RESET_PASSWORD_URL", "{root}/#/reset-password/{token}")
    if not isinstance(url, str) or "{token}" not in url:
        raise ValueError(f"DDPCTL_ACCOUNTS_RESET_PASSWORD_URL must be a string containing {{token}}, "
                         f"not {url!r}.")
    return url


def password_max_length() -> int:
    """``DDPCTL_ACCOUNTS_PASSWORD_MAX_LENGTH``; ``ValueError`` unless a positive integer."""
    length = _get("PASSWORD_MAX_LENGTH", 256)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"DDPCTL_ACCOUNTS_PASSWORD_MAX_LENGTH must be a positive integer, not {length!r}.")
    return length
