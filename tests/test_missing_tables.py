"""A Collection whose model has no table (its app has no migration): system check
``ddpctl.E007`` and ``ddpctl migrate`` exiting 1 with the fix, never a traceback, and no
trigger installed until the table exists."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psycopg2
import pytest
from conftest import PYTHONPATH_ARGS, empty_database

MODELS = """
from django.db import models


class Gadget(models.Model):
    name = models.CharField(max_length=50)
    parts = models.ManyToManyField("self", symmetrical=False, blank=True)
"""
DDP = """
from ddpctl.api import Collection

from .models import Gadget


class Gadgets(Collection):
    model = Gadget
"""
SETTINGS = """
from test_settings import *  # noqa

INSTALLED_APPS = INSTALLED_APPS + ["nomig"]
"""


@pytest.fixture
def project(tmp_path, django_db_blocker):
    """A project whose app ``nomig`` has a Collection and no migrations, with its own database."""
    (tmp_path / "nomig").mkdir()
    (tmp_path / "nomig" / "__init__.py").write_text("")
    (tmp_path / "nomig" / "models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "nomig" / "ddp.py").write_text(textwrap.dedent(DDP))
    (tmp_path / "nomig_settings.py").write_text(textwrap.dedent(SETTINGS))
    with empty_database("ddpctl_nomig") as url:
        yield tmp_path, url


def run(project, *args: str, module: str = "ddpctl") -> subprocess.CompletedProcess:
    directory, url = project
    return subprocess.run([sys.executable, "-m", module, *args], cwd=directory, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "DATABASE_URL": url,
                                            "PYTHONPATH": os.pathsep.join(PYTHONPATH_ARGS[1::2])})


def capture_triggers(url: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ddpctl_capture_%'")
        return cur.fetchone()[0]


def test_migrate_names_the_missing_tables_and_the_fix(project):
    result = run(project, "migrate", "--noinput", "--settings", "nomig_settings")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr[result.stderr.index("Error: "):]
    assert error.splitlines() == [
        "Error: table 'nomig_gadget' of model nomig.Gadget does not exist: run `python manage.py "
        "makemigrations nomig`, then `ddpctl migrate`",
        "table 'nomig_gadget_parts' of model nomig.Gadget.parts (its many-to-many table) does not exist: "
        "run `python manage.py makemigrations nomig`, then `ddpctl migrate`"]
    assert capture_triggers(project[1]) == 0  # the other tables were migrated, no trigger installed
    checked = run(project, "migrate", "--check", "--settings", "nomig_settings")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "table 'nomig_gadget' of model nomig.Gadget does not exist" in checked.stderr
    # Django's own commands: the system check once migrated, and manage.py migrate.
    check = run(project, "check", "--database", "default", "--settings", "nomig_settings", module="django")
    assert check.returncode == 1
    assert "(ddpctl.E007) table 'nomig_gadget' of model nomig.Gadget" in check.stderr
    django_migrate = run(project, "migrate", "--settings", "nomig_settings", module="django")
    assert django_migrate.returncode == 1 and "Traceback" not in django_migrate.stderr
    assert "ddpctl.E007" in django_migrate.stderr
    # The fix it names works.
    made = run(project, "makemigrations", "nomig", "--settings", "nomig_settings", module="django")
    assert made.returncode == 0, made.stderr
    fixed = run(project, "migrate", "--noinput", "--settings", "nomig_settings")
    assert fixed.returncode == 0, fixed.stderr
    assert "nomig_gadget" in fixed.stdout and "nomig_gadget_parts" in fixed.stdout
    assert capture_triggers(project[1]) > 0
    assert run(project, "check", "--database", "default", "--settings", "nomig_settings",
               module="django").returncode == 0


def test_a_fresh_database_is_not_refused_by_the_check(project):
    """Before migrating, every table is missing: manage.py migrate (which runs the checks
    first) must still create them; only the nomig tables, which no migration creates, remain."""
    result = run(project, "migrate", "--noinput", "--settings", "nomig_settings", module="django")
    assert "Applying ddpctl.0001_initial... OK" in result.stdout
    assert result.returncode == 1 and "nomig_gadget" in result.stderr and "Traceback" not in result.stderr


def test_serve_warns_of_each_missing_table_at_start(project):
    """``ddpctl serve`` starts (the other publications work) and names each missing table,
    with check E007, in its log."""
    from ddpctl.testing import LiveServer

    directory, url = project
    run(project, "migrate", "--noinput", "--settings", "nomig_settings")  # the other tables
    env = {"DATABASE_URL": url, "PYTHONPATH": os.pathsep.join(PYTHONPATH_ARGS[1::2])}
    with LiveServer(["--settings", "nomig_settings"], env=env, cwd=str(directory)) as server:
        log = server.output()  # the checks run before it listens
    for table in ("nomig_gadget", "nomig_gadget_parts"):
        assert f"table '{table}' of model nomig.Gadget" in log and "(ddpctl.E007)" in log, log
