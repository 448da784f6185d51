"""ddpctl's tables."""
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Func


class TransactionIdField(models.Field):
    """PostgreSQL ``xid8``: a 64-bit transaction id such as ``pg_current_xact_id()``; an ``int``."""

    description = "PostgreSQL transaction id (xid8)"

    def db_type(self, connection) -> str:
        return "xid8"

    def from_db_value(self, value, expression, connection) -> int | None:
        return None if value is None else int(value)


class Change(models.Model):
    """One captured row change, written by the change-capture triggers (never by Django).

    ``id`` is taken when the statement runs, ``xid`` is the writing (top-level)
    transaction; readers follow commit visibility with :mod:`ddpctl.livedata.changelog`,
    which revisits the transactions that were still running.
    """

    OPS = [("I", "insert"), ("U", "update"), ("D", "delete"), ("T", "truncate")]

    id = models.BigAutoField(primary_key=True)
    table = models.TextField()
    op = models.CharField(max_length=1, choices=OPS)
    row = models.TextField(null=True, help_text="primary key of the changed row, as text")
    fields = ArrayField(models.TextField(), null=True, help_text="columns an update changed")
    at = models.DateTimeField(db_default=Func(function="clock_timestamp"))
    xid = TransactionIdField(null=True, db_default=Func(function="pg_current_xact_id"),
                             help_text="the writing transaction; NULL for rows older than the column")

    class Meta:
        db_table = "ddpctl_change"
        indexes = [models.Index(fields=["at"], name="ddpctl_change_at"),
                   models.Index(fields=["xid", "id"], name="ddpctl_change_xid")]

    def __str__(self) -> str:
        return f"{self.id} {self.op} {self.table} {self.row}"


# -- the node and subscription registry (what `ddpctl nodes/conns/subs ls` read) ------------
# Each serving process (a node) rewrites its own rows on its registry heartbeat, never per DDP
# message.  A node whose heartbeat is older than its ``heartbeat_timeout`` is not listed and
# its rows are deleted by the next live node.  No foreign keys: a node's rows go in one
# statement, and a registry write never waits on another node's lock.


class Node(models.Model):
    """A running ``ddpctl serve`` process."""

    id = models.CharField(primary_key=True, max_length=32)
    host = models.TextField()
    pid = models.IntegerField()
    addresses = ArrayField(models.TextField(), default=list)
    version = models.TextField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    heartbeat_timeout = models.FloatField(help_text="seconds without a heartbeat before the node is gone")

    class Meta:
        db_table = "ddpctl_node"

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class LiveConnection(models.Model):
    """A connected DDP session (``id`` is the session id the client got in ``connected``)."""

    id = models.CharField(primary_key=True, max_length=64)
    node = models.CharField(max_length=32, db_index=True)
    remote_address = models.TextField(null=True)
    user_id = models.TextField(null=True)
    transport = models.TextField()
    opened_at = models.DateTimeField()

    class Meta:
        db_table = "ddpctl_connection"
        verbose_name = "live connection"

    def __str__(self) -> str:
        return self.id


class LiveSubscription(models.Model):
    pk = models.CompositePrimaryKey("connection", "sub_id")
    connection = models.CharField(max_length=64)
    sub_id = models.TextField()
    node = models.CharField(max_length=32, db_index=True)
    publication = models.TextField()
    params = models.TextField(help_text="EJSON")
    documents = models.IntegerField()
    collections = ArrayField(models.TextField(), default=list)
    started_at = models.DateTimeField()
    refresh = models.TextField(db_default="", help_text="how its observer refreshes: multiplexed, alone: why")

    class Meta:
        db_table = "ddpctl_subscription"


class LiveSubscriptionListing(models.Model):
    """``ddpctl_subscription`` as a read-only view with a single-column key (``connection``
    and ``sub_id`` joined by a space), for Django's admin, which cannot list a model with a
    composite primary key.  Never written."""

    id = models.TextField(primary_key=True)
    connection = models.CharField(max_length=64)
    sub_id = models.TextField()
    node = models.CharField(max_length=32)
    publication = models.TextField()
    params = models.TextField(help_text="EJSON, secrets redacted")
    documents = models.IntegerField()
    collections = ArrayField(models.TextField(), default=list)
    started_at = models.DateTimeField()
    refresh = models.TextField(help_text="how its observer refreshes: multiplexed, alone: why")

    class Meta:
        managed = False
        db_table = "ddpctl_subscription_listing"
        verbose_name = "live subscription"

    def __str__(self) -> str:
        return f"{self.publication} ({self.sub_id} of {self.connection})"


class Command(models.Model):
    """An operator's request to the nodes (close a connection, replay changes).

    NOTIFY only wakes the nodes; the row is what they act on, so a node that was
    reconnecting when it was sent still finds it.
    """

    id = models.BigAutoField(primary_key=True)
    kind = models.TextField()
    node = models.CharField(max_length=32, null=True, help_text="the node it is for; NULL: every node")
    args = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Func(function="clock_timestamp"))

    class Meta:
        db_table = "ddpctl_command"


class CommandResult(models.Model):
    pk = models.CompositePrimaryKey("command_id", "node")
    command_id = models.BigIntegerField()
    node = models.CharField(max_length=32)
    result = models.JSONField(default=dict)
    done_at = models.DateTimeField(db_default=Func(function="clock_timestamp"))

    class Meta:
        db_table = "ddpctl_command_result"
