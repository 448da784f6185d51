"""Finding the user a Meteor login names: ``{id}``, ``{username}`` or ``{email}``.

Like Meteor's ``Accounts._findUserByQuery``: an exact match first, else a case-insensitive
one when it is unique (two users differing only in case: neither is found).  ``username``
is the model's ``USERNAME_FIELD``; ``email`` its ``EMAIL_FIELD`` (``get_email_field_name()``).
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ValidationError

__all__ = ["find_user", "find_by_field", "email_field", "username_field"]


def username_field() -> str:
    return get_user_model().USERNAME_FIELD


def email_field() -> str | None:
    """The user model's e-mail field name, or ``None`` if it has no such field."""
    model = get_user_model()
    name = model.get_email_field_name()
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return name


def find_by_field(field: str, value: str) -> Any:
    """The user whose ``field`` is ``value``, exactly or else case-insensitively (unique)."""
    manager = get_user_model()._default_manager
    exact = list(manager.filter(**{field: value})[:2])
    if len(exact) == 1:
        return exact[0]
    if exact:
        return None
    candidates = list(manager.filter(**{f"{field}__iexact": value})[:2])
    return candidates[0] if len(candidates) == 1 else None


def find_user(selector: dict[str, str]) -> Any:
    """The user ``selector`` (exactly one of ``id``, ``username``, ``email``) names, or ``None``."""
    model = get_user_model()
    if "id" in selector:
        try:
            pk = model._meta.pk.to_python(selector["id"])
        except (ValidationError, ValueError, TypeError):
            return None
        return model._default_manager.filter(pk=pk).first()
    if "username" in selector:
        return find_by_field(username_field(), selector["username"])
    field = email_field()
    if "email" in selector and field is not None:
        return find_by_field(field, selector["email"])
    return None
