"""ddpctl's tables."""
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Func


class Change(models.Model):
    """One captured row change, written by the change-capture triggers (never by Django).

    ``id`` is taken when the statement runs; readers follow commit visibility with
    :mod:`ddpctl.changelog`, which revisits ids that were not yet visible.
    """

    OPS = [("I", "insert"), ("U", "update"), ("D", "delete"), ("T", "truncate")]

    id = models.BigAutoField(primary_key=True)
    table = models.TextField()
    op = models.CharField(max_length=1, choices=OPS)
    row = models.TextField(null=True, help_text="primary key of the changed row, as text")
    fields = ArrayField(models.TextField(), null=True, help_text="columns an update changed")
    at = models.DateTimeField(db_default=Func(function="clock_timestamp"))

    class Meta:
        db_table = "ddpctl_change"
        indexes = [models.Index(fields=["at"], name="ddpctl_change_at")]

    def __str__(self) -> str:
        return f"{self.id} {self.op} {self.table} {self.row}"
