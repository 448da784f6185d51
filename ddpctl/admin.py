"""ddpctl's tables in Django's admin, read-only: nodes, live connections and subscriptions
(the registry ``ddpctl nodes/conns/subs ls`` read) and the changelog.

Nothing can be added, changed or deleted here: the serving nodes write these rows.  One
action: *Close the selected connections*, sent to their nodes through the operator command
channel (:mod:`ddpctl.control`) as ``ddpctl conns close`` does; it needs the *delete*
permission on live connections (superusers have it).  Seeing the lists needs the *view*
permission on each model.
"""
from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from .models import Change, LiveConnection, LiveSubscriptionListing, Node
from .redaction import redact_params_json

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 10.0  # seconds the close action waits for the nodes to confirm


class ReadOnlyAdmin(admin.ModelAdmin):
    """A list (and a read-only page per row) with no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ["id", "host", "pid", "addresses", "version", "started_at", "heartbeat_at", "live"]
    search_fields = ["id", "host"]
    ordering = ["host", "started_at"]

    @admin.display(boolean=True, description="live")
    def live(self, node: Node) -> bool:
        """Whether its heartbeat is recent enough to be listed by ``ddpctl nodes ls``."""
        from django.utils import timezone

        return (timezone.now() - node.heartbeat_at).total_seconds() <= node.heartbeat_timeout


@admin.register(LiveConnection)
class LiveConnectionAdmin(ReadOnlyAdmin):
    list_display = ["id", "node", "remote_address", "user_id", "transport", "opened_at"]
    list_filter = ["transport", "node"]
    search_fields = ["id", "remote_address", "user_id"]
    ordering = ["opened_at", "id"]
    actions = ["close_connections"]

    def has_close_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('delete', opts)}")

    @admin.action(description="Close the selected connections (clients may reconnect)",
                  permissions=["close"])
    def close_connections(self, request: HttpRequest, queryset: QuerySet[LiveConnection]) -> None:
        from .commands.django_setup import raw_connection
        from .control import close_connections

        targets = list(queryset.values_list("id", "node"))
        conn = raw_connection("ddpctl-admin")  # autocommit: the nodes see the commands at once
        try:
            with conn.cursor() as cursor:
                results = close_connections(cursor, targets, CLOSE_TIMEOUT)
        finally:
            conn.close()
        closed = [c for c, r in results.items() if r is not None and r.get("closed")]
        gone = [c for c, r in results.items() if r is not None and not r.get("closed") and "error" not in r]
        failed = {c: r["error"] for c, r in results.items() if r is not None and "error" in r}
        silent = [c for c, r in results.items() if r is None]
        logger.info("admin user %s closed connection(s) %s", request.user.get_username(), ", ".join(closed))
        if closed:
            self.message_user(request, f"Closed {len(closed)} connection(s): {', '.join(closed)}.",
                              messages.SUCCESS)
        if gone:
            self.message_user(request, f"Already gone: {', '.join(gone)}.", messages.WARNING)
        for conn_id, error in failed.items():
            self.message_user(request, f"Connection {conn_id}: {error}", messages.ERROR)
        if silent:
            self.message_user(request, f"Their node did not confirm within {CLOSE_TIMEOUT:g} s: "
                                       f"{', '.join(silent)}.", messages.ERROR)


@admin.register(LiveSubscriptionListing)
class LiveSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["publication", "sub_id", "connection", "node", "shown_params", "documents",
                    "collections", "refresh", "started_at"]
    list_filter = ["publication", "node"]
    search_fields = ["publication", "connection"]
    ordering = ["started_at", "id"]
    fields = ["publication", "sub_id", "connection", "node", "shown_params", "documents", "collections",
              "refresh", "started_at"]
    readonly_fields = fields

    @admin.display(description="params")
    def shown_params(self, subscription: LiveSubscriptionListing) -> str:
        """Redacted again for display: a node of an older version stored them as they came."""
        return redact_params_json("publication", subscription.publication, subscription.params)


class EstimatedCountPaginator(Paginator):
    """Pages of a big table without ``count(*)`` over all of it: for the unfiltered list,
    PostgreSQL's estimate of the table's rows (``pg_class.reltuples``) once it is large."""

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                               [self.object_list.model._meta.db_table])
                row = cursor.fetchone()
            if row is not None and row[0] >= self.exact_below:
                return int(row[0])
        return super().count


@admin.register(Change)
class ChangeAdmin(ReadOnlyAdmin):
    """The changelog: one row per captured write, in position order (newest first)."""

    list_display = ["id", "at", "op", "table", "row", "fields", "xid"]
    list_filter = ["op"]  # (a filter by table would read every row for its choices)
    search_fields = ["=row", "=table"]
    ordering = ["-id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
