"""Revocation on every node: a connection whose login token stops being valid is closed.

Each serving process remembers which of its connections logged in with which token
(:data:`logins`).  The token and user tables are captured, so every node's change
dispatcher hears of a deleted token, a deactivated or deleted user and a new password
(:mod:`ddpctl.livedata.watchers`); :func:`revoke_changed` then re-checks the tokens of
the connections concerned and closes those whose token no longer logs in, as Meteor does
(its client reconnects, its ``resume`` fails with 403 and it shows itself logged out).
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from ..invocation import ConnectionHandle
from ..livedata.changelog import ChangeRow
from ..session_login import session_user_id
from .models import LoginToken
from .tokens import is_valid

__all__ = ["LoginRegistry", "logins", "watched_tables", "revoke_changed"]

logger = logging.getLogger(__name__)


@dataclass
class _Login:
    handle: weakref.ref[ConnectionHandle]
    user_id: Any
    token_id: int | None  # None: logged in from its Django session (DDPCTL_SESSION_LOGIN)


class LoginRegistry:
    """This process's logged-in connections: connection id -> (user, token row or None for
    a Django session login)."""

    def __init__(self) -> None:
        self._by_connection: dict[str, _Login] = {}

    def set_session(self, handle: ConnectionHandle, user_id: Any) -> None:
        """``handle`` starts logged in from its Django session cookie."""
        self.set(handle, user_id, None)

    def set(self, handle: ConnectionHandle, user_id: Any, token_id: int | None) -> None:
        key = handle.id

        def gone(_ref: Any, key: str = key) -> None:
            login = self._by_connection.get(key)
            if login is not None and login.handle() is None:
                del self._by_connection[key]

        self._by_connection[key] = _Login(weakref.ref(handle, gone), user_id, token_id)

    def clear(self, handle: ConnectionHandle | None) -> None:
        if handle is not None:
            self._by_connection.pop(handle.id, None)

    def token_id(self, handle: ConnectionHandle | None) -> int | None:
        """The token row the connection logged in with, if it did."""
        login = self._by_connection.get(handle.id) if handle is not None else None
        return None if login is None or login.handle() is not handle else login.token_id

    def select(self, token_ids: Iterable[int] = (), user_ids: Iterable[str] = (),
               everyone: bool = False) -> list[tuple[ConnectionHandle, _Login]]:
        """Live connections logged in with one of ``token_ids`` or as one of ``user_ids``
        (user ids as text, the changelog's ``row``)."""
        tokens, users = set(token_ids), set(user_ids)
        out = []
        for login in list(self._by_connection.values()):
            handle = login.handle()
            if handle is not None and (everyone or login.token_id in tokens or str(login.user_id) in users):
                out.append((handle, login))
        return out

    def __len__(self) -> int:
        return sum(1 for login in self._by_connection.values() if login.handle() is not None)


logins = LoginRegistry()


def watched_tables() -> set[str]:
    return {LoginToken._meta.db_table, get_user_model()._meta.db_table}


def revoke_changed(rows: list[ChangeRow]) -> None:
    """Close this node's connections whose token ``rows`` (changes of the token and user
    tables) may have revoked and that no longer log in."""
    token_table, user_table = LoginToken._meta.db_table, get_user_model()._meta.db_table
    token_ids: set[int] = set()
    user_ids: set[str] = set()
    everyone = False
    for row in rows:
        if row.op == "T" or row.row is None:
            everyone = True
        elif row.table == token_table and row.op in "UD":
            token_ids.add(int(row.row))
        elif row.table == user_table and row.op in "UD":
            user_ids.add(row.row)
    concerned = logins.select(token_ids, user_ids, everyone)
    if not concerned:
        return
    found = {t.pk: t for t in LoginToken.objects.select_related("user").filter(
        pk__in={login.token_id for _, login in concerned if login.token_id is not None})}
    for handle, login in concerned:
        if login.token_id is None:  # a Django session login: does Django still accept it?
            if str(session_user_id(handle.http_headers.get("cookie"))) == str(login.user_id):
                continue
            logger.info("closing connection %s (%s): its Django session no longer logs in user %s",
                        handle.id, handle.client_address, login.user_id)
            logins.clear(handle)
            handle.close()
            continue
        token = found.get(login.token_id)
        if token is not None and str(token.user_id) == str(login.user_id) and is_valid(token, token.user):
            continue
        logger.info("closing connection %s (%s): its login token (row %s of user %s) was revoked",
                    handle.id, handle.client_address, login.token_id, login.user_id)
        logins.clear(handle)
        handle.close()
