from django.conf import settings
from django.db import models


class Note(models.Model):
    """A row with per-user visibility: its owner sees it, everyone sees it once shared."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()
    shared = models.BooleanField(default=False)


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
