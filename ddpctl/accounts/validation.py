"""The shapes Meteor's accounts methods ``check``: anything else is ``400 Match failed``."""
from __future__ import annotations

from typing import Any

from ..ddp.errors import match_failed
from . import conf

__all__ = ["match_failed", "check_password_option", "check_user_selector", "check_string"]


def check_string(value: Any, what: str, non_empty: bool = False) -> str:
    if not isinstance(value, str) or (non_empty and not value):
        raise match_failed(f"{what}: expected a{' non-empty' if non_empty else ''} string")
    return value


def check_password_option(value: Any) -> tuple[str, bool]:
    """Meteor's ``passwordValidator``: ``(password or digest, is_digest)``.

    A plaintext string of at most ``DDPCTL_ACCOUNTS_PASSWORD_MAX_LENGTH`` (256) characters,
    or exactly ``{digest: <64 characters>, algorithm: "sha-256"}``.
    """
    if isinstance(value, str):
        if len(value) > conf.password_max_length():
            raise match_failed("password: too long")
        return value, False
    if (isinstance(value, dict) and set(value) == {"digest", "algorithm"} and value["algorithm"] == "sha-256"
            and isinstance(value["digest"], str) and len(value["digest"]) == 64):
        return value["digest"], True
    raise match_failed("password: expected a string or {digest, algorithm: 'sha-256'}")


def check_user_selector(value: Any) -> dict[str, str]:
    """Meteor's ``_userQueryValidator``: exactly one of ``id``, ``username``, ``email``, a
    non-empty string."""
    if not isinstance(value, dict) or not set(value) <= {"id", "username", "email"}:
        raise match_failed("user: expected {id}, {username} or {email}")
    for key, item in value.items():
        check_string(item, f"user.{key}", non_empty=True)
    if len(value) != 1:
        raise match_failed("User property must have exactly one field")
    return value
