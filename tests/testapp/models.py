from django.conf import settings
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
