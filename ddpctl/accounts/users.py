"""The ``users`` collection: the logged-in user's own document, as ``Meteor.user()`` reads it.

A universal publication (:class:`CurrentUser`) publishes, to every logged-in connection,
its user only: ``{_id, username, emails: [{address, verified}], profile}`` (Meteor's
default fields), live (a change of the row reaches the client).  ``username`` is the
``USERNAME_FIELD``; ``emails`` holds the ``EMAIL_FIELD`` address when set (``verified``
is ``False``: Django keeps no such flag); ``profile`` is ``{"name": get_full_name()}``
when the model has a non-empty full name, else ``{}``.  ``DDPCTL_ACCOUNTS_USER_FIELDS``
chooses the fields: those three names and any concrete field of the user model (sent
under its name, e.g. ``"first_name"``, ``"date_joined"``).  The password hash is never
published, whatever the setting says.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Model

from ..livedata.collection import Collection
from ..livedata.publication import Publication
from ..values import to_ddp_value
from . import conf
from .lookup import email_field

__all__ = ["UsersCollection", "users_collection", "user_document", "CurrentUser"]

NEVER_PUBLISHED = frozenset({"password"})


def user_document(user: Any, fields: list[str] | None = None) -> dict[str, Any]:
    """The fields of ``user``'s ``users`` document (EJSON-ready values, ``_id`` excluded)."""
    doc: dict[str, Any] = {}
    for name in conf.user_fields() if fields is None else fields:
        if name in NEVER_PUBLISHED:
            continue
        if name == "username":
            doc["username"] = user.get_username()
        elif name == "emails":
            field = email_field()
            address = getattr(user, field, None) if field else None
            doc["emails"] = [{"address": address, "verified": False}] if address else []
        elif name == "profile":
            full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
            doc["profile"] = {"name": full_name} if full_name else {}
        else:
            field = user._meta.get_field(name)
            doc[name] = to_ddp_value(field.value_from_object(user), f"users.{name}")
    return doc


class UsersCollection(Collection, register=False):
    """The ``users`` collection (not registered: the user model may have a Collection of its
    own in the project; this one is reached through :class:`CurrentUser` only)."""

    name = "users"

    def serialize(self, obj: Model) -> tuple[str, dict[str, Any]]:
        return self.doc_id(obj.pk), user_document(obj)


_collection: UsersCollection | None = None


def users_collection() -> UsersCollection:
    global _collection
    if _collection is None:
        cls = type("UsersCollection", (UsersCollection,), {"model": get_user_model()}, register=False)
        _collection = cls()
    return _collection


class CurrentUser(Publication):
    """Universal: the connection's own user, in ``users`` (nothing when logged out, so it
    runs only while the connection is logged in: ``user_only``)."""

    name = "ddpctl.accounts.current_user"
    universal = True
    user_only = True

    def get_queries(self) -> list[Any]:
        user_id = self.user_id
        if user_id is None:
            return []
        return [(get_user_model()._default_manager.filter(pk=user_id), users_collection())]
