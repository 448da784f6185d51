import decimal
import json

from django.conf import settings
from django.contrib.postgres.fields import (
    ArrayField,
    BigIntegerRangeField,
    DateRangeField,
    DateTimeRangeField,
    DecimalRangeField,
    HStoreField,
    IntegerRangeField,
)
from django.db import models


class Note(models.Model):
    """A row with per-user visibility: its owner sees it, everyone sees it once shared."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()
    shared = models.BooleanField(default=False)


class TenantNote(models.Model):
    """A row of one tenant; publications choose the tenant from the subscriber."""

    tenant = models.TextField()
    text = models.TextField()


class Opaque:
    """A Python value with no DDP mapping (what a JSON decoder may produce)."""

    def __init__(self, value):
        self.value = value


class DataDecoder(json.JSONDecoder):
    """Decodes ``{"decimal": "1.5"}`` to a Decimal and ``{"opaque": x}`` to an ``Opaque``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, object_hook=self._hook, **kwargs)

    @staticmethod
    def _hook(obj):
        if set(obj) == {"decimal"}:
            return decimal.Decimal(obj["decimal"])
        if set(obj) == {"opaque"}:
            return Opaque(obj["opaque"])
        return obj


class Kind(models.TextChoices):
    PAPER = "paper", "Paper"
    EBOOK = "ebook", "E-book"


class Level(models.IntegerChoices):
    LOW = 1, "Low"
    HIGH = 2, "High"


class Everything(models.Model):
    """One column of every field type of Django and ``django.contrib.postgres``.

    ``tags`` (hstore) is plain text when the server lacks the hstore extension (see the
    migration); its tests are skipped then.
    """

    id = models.BigAutoField(primary_key=True)
    big = models.BigIntegerField(null=True)
    small = models.SmallIntegerField(null=True)
    integer = models.IntegerField(null=True)
    positive = models.PositiveIntegerField(null=True)
    positive_big = models.PositiveBigIntegerField(null=True)
    positive_small = models.PositiveSmallIntegerField(null=True)
    flag = models.BooleanField(null=True)
    char = models.CharField(max_length=100, null=True)
    text = models.TextField(null=True)
    slug = models.SlugField(null=True)
    email = models.EmailField(null=True)
    url = models.URLField(null=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, null=True)
    level = models.IntegerField(choices=Level.choices, null=True)
    real = models.FloatField(null=True)
    amount = models.DecimalField(max_digits=30, decimal_places=10, null=True)
    day = models.DateField(null=True)
    moment = models.DateTimeField(null=True)
    clock = models.TimeField(null=True)
    span = models.DurationField(null=True)
    blob = models.BinaryField(null=True)
    uid = models.UUIDField(null=True)
    ip = models.GenericIPAddressField(null=True)
    file = models.FileField(null=True)
    path = models.FilePathField(path="/tmp", null=True)
    data = models.JSONField(null=True, decoder=DataDecoder)
    doubled = models.GeneratedField(expression=models.F("integer") * 2, output_field=models.BigIntegerField(),
                                    db_persist=True)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True)
    prices = ArrayField(models.DecimalField(max_digits=12, decimal_places=2), null=True)
    moments = ArrayField(models.DateTimeField(), null=True)
    uids = ArrayField(models.UUIDField(), null=True)
    grid = ArrayField(ArrayField(models.IntegerField()), null=True)
    reals = ArrayField(models.FloatField(null=True), null=True)
    ips = ArrayField(models.GenericIPAddressField(), null=True)
    spans = ArrayField(models.DurationField(), null=True)
    tags = HStoreField(null=True)
    int_range = IntegerRangeField(null=True)
    big_range = BigIntegerRangeField(null=True)
    decimal_range = DecimalRangeField(null=True)
    moment_range = DateTimeRangeField(null=True)
    day_range = DateRangeField(null=True)


# -- change capture on hostile schemas: names that collide with SQL keywords and with the
#    identifiers a trigger might use; odd primary keys of every kind --------------------

class HostileTag(models.Model):
    """A UUID primary key in a table whose name needs quotes."""

    uuid = models.UUIDField(primary_key=True)
    label = models.CharField(max_length=50, unique=True, db_column="Value")

    class Meta:
        db_table = "Select Tag's"


class Hostile(models.Model):
    """Reserved words and trigger-ish names everywhere; a char primary key with a custom column."""

    ident = models.CharField(primary_key=True, max_length=100, db_column="Key 'Id' ü")
    id = models.IntegerField(default=0)
    o = models.IntegerField(default=0)
    n = models.TextField(default="")
    e = models.TextField(default="")
    k = models.IntegerField(default=0)
    j = models.TextField(default="")
    r = models.TextField(default="")
    key = models.TextField(default="")
    value = models.TextField(default="")
    row = models.TextField(default="")
    table = models.TextField(default="")
    op = models.TextField(default="")
    fields = models.TextField(default="")
    new_rows = models.TextField(default="")
    old_rows = models.TextField(default="")
    select = models.TextField(default="", db_column="SELECT")
    tag = models.ForeignKey(HostileTag, to_field="label", null=True, on_delete=models.SET_NULL,
                            db_column="order", related_name="+")
    tags = models.ManyToManyField(HostileTag, db_table="User Order's tags", related_name="hostiles")

    class Meta:
        db_table = "Order User's Table"


class HostilePair(models.Model):
    """A composite primary key (Django 5.2)."""

    pk = models.CompositePrimaryKey("o", "n")
    o = models.IntegerField()
    n = models.CharField(max_length=50, db_column="N")
    value = models.IntegerField(default=0)

    class Meta:
        db_table = "user"


class Tiny(models.Model):
    id = models.SmallAutoField(primary_key=True)
    value = models.IntegerField(default=0)

    class Meta:
        db_table = "Group"


# -- tables a publication reads without a Collection of their own ---------------------

class Team(models.Model):
    name = models.CharField(max_length=50)


class Membership(models.Model):
    """No Collection: only Collection.visible() of TeamDoc reads it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    team = models.ForeignKey(Team, on_delete=models.CASCADE)


class TeamDoc(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    title = models.CharField(max_length=100)


class DocLabel(models.Model):
    """No Collection, and no static queryset reads it: only a publication with params."""

    doc = models.ForeignKey(TeamDoc, on_delete=models.CASCADE)
    label = models.CharField(max_length=50)


# -- multiplexed observers: per-user visibility through ownership and membership ----------

class Board(models.Model):
    name = models.CharField(max_length=50)


class BoardMember(models.Model):
    """No Collection: only Cards.visible() reads it (a member sees every card of the board)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    board = models.ForeignKey(Board, on_delete=models.CASCADE)


class Label(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Card(models.Model):
    """Seen by its owner and by the members of its board; ``labels`` is many-to-many."""

    board = models.ForeignKey(Board, on_delete=models.CASCADE)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    title = models.CharField(max_length=100)
    points = models.IntegerField(default=0)
    labels = models.ManyToManyField(Label, blank=True, related_name="cards")
