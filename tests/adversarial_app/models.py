"""Models for the adversarial review of issues 11 and 12 (tests/test_adversarial_11_12.py)."""
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Item(models.Model):
    """A UUID primary key, JSON and array columns, a float-friendly score."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=50)
    score = models.IntegerField(default=0)
    data = models.JSONField(default=dict)
    tags = ArrayField(models.CharField(max_length=20), default=list)
