"""ddpctl's pytest plugin as a user meets it: a small Django project of its own (a model, a
Collection, publications, methods) whose tests use ``ddp_communicator``, ``ddp_client`` and
``ddp_server``, run by an inner pytest in a subprocess (the plugin comes from the installed
``pytest11`` entry point, the database from pytest-django's test database on the suite's
PostgreSQL server).  The inner run's outcomes are asserted, and so are the timeout reports of
its deliberately failing tests."""
import os
import textwrap

import psycopg2
import pytest
from django.conf import settings

from ddpctl.testing.server_database import database_url

pytest_plugins = ["pytester"]

SETTINGS = '''
import os

from ddpctl.database import parse_database_url

SECRET_KEY = "inner"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "ddpctl", "notes"]
DATABASES = {"default": parse_database_url(os.environ["INNER_DATABASE_URL"])}
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "myproject.urls"
TIME_ZONE = "Pacific/Kiritimati"  # +14:00; the run starts in Asia/Kolkata (TZ)
'''

MODELS = '''
from django.conf import settings
from django.db import models


class Note(models.Model):
    title = models.TextField()
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE)
'''

DDP = '''
from django.db import connection

from ddpctl.api import Collection, MeteorError, Publication, current_invocation, method

from .models import Note


class Notes(Collection):
    model = Note
    name = "notes"


class AllNotes(Publication):
    queries = [Note.objects.all()]


class MyNotes(Publication):
    def get_queries(self):
        if self.user_id is None:
            return []
        return [Note.objects.filter(owner_id=self.user_id)]


@method("notes.add")
def add_note(title):
    if not title:
        raise MeteorError(400, "A note needs a title")
    return Note.objects.create(title=title, owner_id=current_invocation().user_id).pk


@method("notes.crash")
def crash():
    return 1 / 0


@method("notes.database")
def database():
    return connection.settings_dict["NAME"]
'''

MIGRATION = '''
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]
    operations = [migrations.CreateModel("Note", [
        ("id", models.AutoField(primary_key=True, serialize=False)),
        ("title", models.TextField()),
        ("owner", models.ForeignKey(null=True, on_delete=models.CASCADE, to=settings.AUTH_USER_MODEL)),
    ])]
'''

CONFTEST = '''
import pytest


@pytest.fixture(scope="session")
def ddp_server_args():
    return ["--max-subscriptions", "2"]
'''

TESTS = '''
import pytest
from django.contrib.auth.models import User
from django.db import connection

from ddpctl.api import MeteorError
from ddpctl.testing import DDPClient, DDPCommunicator
from notes.models import Note


@pytest.mark.django_db
def test_a_subscription_follows_the_tests_writes(ddp_communicator):
    ddp_communicator.subscribe("AllNotes")
    assert ddp_communicator.collections.get("notes", {}) == {}
    note = Note.objects.create(title="first")
    ddp_communicator.wait_for_collection("notes", {str(note.pk): {"title": "first", "owner_id": None}})
    Note.objects.filter(pk=note.pk).update(title="renamed")
    changed = ddp_communicator.wait_for_message({"msg": "changed", "collection": "notes"})
    assert changed["fields"] == {"title": "renamed"}
    note.delete()
    ddp_communicator.wait_for_collection("notes", {})
    kinds = [m["msg"] for m in ddp_communicator.messages]
    assert kinds == ["connected", "ready", "added", "changed", "removed"]


@pytest.mark.django_db
def test_methods_results_errors_and_the_write_fence(ddp_communicator):
    sub = ddp_communicator.subscribe("AllNotes")
    pk = ddp_communicator.call("notes.add", "from a method")
    # updated follows the method's data: the document is there without waiting
    assert ddp_communicator.collections["notes"][str(pk)]["title"] == "from a method"
    assert Note.objects.get(pk=pk).title == "from a method"
    with pytest.raises(MeteorError) as refused:
        ddp_communicator.call("notes.add", "")
    assert refused.value.error == 400
    ddp_communicator.unsubscribe(sub)
    assert ddp_communicator.collections["notes"] == {}
    kinds = {m["msg"] for m in ddp_communicator.messages}
    assert {"added", "ready", "result", "updated", "removed", "nosub"} <= kinds
    with pytest.raises(MeteorError) as missing:
        ddp_communicator.subscribe("NoSuchPublication")
    assert missing.value.error == 404


@pytest.mark.django_db
def test_a_logged_in_user_and_logging_out():
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    mine = Note.objects.create(title="alice's", owner=alice)
    Note.objects.create(title="bob's", owner=bob)
    with DDPCommunicator(user=alice) as comm:
        comm.subscribe("MyNotes")
        assert set(comm.collections["notes"]) == {str(mine.pk)}
        pk = comm.call("notes.add", "another")
        assert Note.objects.get(pk=pk).owner == alice
        comm.logout()
        comm.wait_for_collection("notes", {})
        comm.login(bob)
        comm.wait_for_collection("notes", lambda docs: [d["title"] for d in docs.values()] == ["bob's"])


@pytest.mark.django_db
def test_two_communicators_see_each_others_writes():
    with DDPCommunicator() as reader, DDPCommunicator() as writer:
        reader.subscribe("AllNotes")
        pk = writer.call("notes.add", "shared")
        reader.wait_for_collection("notes", lambda docs: str(pk) in docs)


def test_a_live_server_on_the_test_database(ddp_client):
    assert ddp_client.call("notes.database") == connection.settings_dict["NAME"]
    assert connection.settings_dict["NAME"].startswith("test_")
    ddp_client.subscribe("AllNotes")
    note = Note.objects.create(title="committed")
    ddp_client.wait_for_collection("notes", {str(note.pk): {"title": "committed", "owner_id": None}})
    pk = ddp_client.call("notes.add", "by the server")
    assert Note.objects.get(pk=pk).title == "by the server"
    ddp_client.wait_for_collection("notes", lambda docs: len(docs) == 2)


def test_each_live_test_starts_empty(ddp_client):
    ddp_client.subscribe("AllNotes")
    assert ddp_client.collections.get("notes", {}) == {}
    sub = ddp_client.sub("AllNotes")
    ddp_client.wait_for_ready(sub)


@pytest.mark.django_db  # not transactional: the plugin makes it so for a live server
def test_a_plain_django_db_mark_still_commits(ddp_server):
    with DDPClient(ddp_server.sockjs_url) as client:  # a client of one's own, over SockJS
        client.connect()
        client.subscribe("AllNotes")
        Note.objects.create(title="seen")
        client.wait_for_collection("notes", lambda docs: len(docs) == 1)


def test_the_servers_options_come_from_ddp_server_args(ddp_client):
    ddp_client.subscribe("AllNotes")
    ddp_client.subscribe("MyNotes")
    with pytest.raises(MeteorError) as refused:
        ddp_client.subscribe("AllNotes")
    assert refused.value.error == 429


def test_a_live_wait_that_times_out(ddp_client):
    ddp_client.subscribe("AllNotes")
    Note.objects.create(title="present")
    ddp_client.wait_for_collection("notes", lambda docs: "absent" in docs, timeout=1)


def test_a_live_method_that_crashes(ddp_client):
    assert ddp_client.call("notes.crash") == 0


@pytest.mark.django_db
def test_an_in_process_wait_that_times_out(ddp_communicator):
    ddp_communicator.subscribe("AllNotes")
    ddp_communicator.wait_for_message({"msg": "removed"}, timeout=0.5)
'''


@pytest.fixture
def project(pytester, monkeypatch):
    """The user's project in the pytester directory, on a database of its own."""
    base = settings.DATABASES["default"]
    name = f"ddpctl_inner_{os.getpid()}"
    monkeypatch.setenv("INNER_DATABASE_URL", database_url({**base, "NAME": name}))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # the zone the user's test run starts in
    pytester.makefile(".ini", pytest=textwrap.dedent("""
        [pytest]
        DJANGO_SETTINGS_MODULE = myproject.settings
        pythonpath = .
        addopts = -p no:cacheprovider
    """))
    files = {"myproject/__init__.py": "", "myproject/settings.py": SETTINGS,
             "myproject/urls.py": "urlpatterns = []\n", "notes/__init__.py": "",
             "notes/models.py": MODELS, "notes/ddp.py": DDP,
             "notes/migrations/__init__.py": "", "notes/migrations/0001_initial.py": MIGRATION,
             "conftest.py": CONFTEST, "test_notes.py": TESTS}
    for path, text in files.items():
        target = pytester.path / path
        target.parent.mkdir(exist_ok=True)
        target.write_text(textwrap.dedent(text))
    yield pytester
    # pytest-django drops it; not if the inner run was killed or failed to create it
    admin = psycopg2.connect(database_url({**base, "NAME": "postgres"}))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')
    admin.close()


@pytest.mark.timeout(600)
def test_a_projects_tests_use_the_fixtures(project):
    result = project.runpytest_subprocess("-v", "--create-db")
    result.assert_outcomes(passed=8, failed=3)
    for name in ("test_a_live_wait_that_times_out", "test_an_in_process_wait_that_times_out",
                 "test_a_live_method_that_crashes"):
        result.stdout.fnmatch_lines([f"*::{name} FAILED*"])
    text = result.stdout.str()
    # The live wait's report: what was awaited, the messages, the collection as it is.
    assert ("WaitTimeout: timed out after 1 s waiting for collection 'notes' to satisfy "
            "test_a_live_wait_that_times_out.<locals>.<lambda>") in text
    assert "the last 3 received:" in text
    assert '"title": "present"' in text
    assert "'notes': 1 document(s)" in text
    # A failed live test shows what the server logged meanwhile: here the method's traceback.
    result.stdout.fnmatch_lines(["*Captured ddpctl serve log*", "*Exception in method 'notes.crash'*",
                                 "*ZeroDivisionError: division by zero*"], consecutive=False)
    # The server logs in the zone the run started in, not in the TIME_ZONE Django set TZ to.
    result.stdout.fnmatch_lines(["*+05:30 ERROR*Exception in method 'notes.crash'*"])
    assert "+14:00" not in text
    # The in-process one names the message awaited.
    assert """waiting for a message matching {"msg": "removed"}""" in text
