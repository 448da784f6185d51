"""Method and publication registration, invocation and database settings, in-process."""
import pytest
from bookstore.models import Book

from ddpctl.api import MeteorError
from ddpctl.database import parse_database_url
from ddpctl.invocation import MethodInvocation, current_invocation
from ddpctl.methods import MethodRegistry, method, methods


def test_bookstore_and_test_methods_are_discovered():
    for name in ["books.add", "books.rename", "books.delete", "books.count", "echo"]:
        assert name in methods


def test_registration_forms():
    registry = MethodRegistry()

    def add(a, b):
        return a + b

    registry.register("add", add)
    registry.register("add", add)  # the same function again is fine (module re-import)
    with pytest.raises(ValueError):
        registry.register("add", lambda a, b: 0)
    assert registry.names() == ["add"]


def test_decorator_forms():
    @method
    def _unit_plain():
        return 1

    @method("unit.named")
    def _unit_named():
        return 2

    try:
        assert "_unit_plain" in methods and "unit.named" in methods
    finally:
        methods.unregister("_unit_plain")
        methods.unregister("unit.named")


@pytest.mark.django_db
def test_invoke_runs_in_a_transaction():
    invocation = MethodInvocation("add_then_fail", None)
    with pytest.raises(MeteorError):
        methods.invoke("add_then_fail", ["Rolled Back"], invocation)
    assert not Book.objects.filter(title="Rolled Back").exists()


@pytest.mark.django_db
def test_invoke_maps_errors(caplog):
    invocation = MethodInvocation("crash", None)
    with pytest.raises(MeteorError) as info:
        methods.invoke("crash", [], invocation)
    assert info.value.error == 500
    assert "ZeroDivisionError" in caplog.text
    with pytest.raises(MeteorError) as info:
        methods.invoke("nope", [], invocation)
    assert info.value.error == 404


def test_current_invocation_outside_a_method():
    with pytest.raises(RuntimeError):
        current_invocation()


def test_random_stream_without_seed_is_random_but_stable_per_invocation():
    inv = MethodInvocation("x", None)
    stream = inv.random_stream("/collection/a")
    assert inv.random_stream("/collection/a") is stream


@pytest.mark.parametrize("url, expected", [
    ("postgres://u:p%40ss@db.example.com:6543/app",
     {"NAME": "app", "USER": "u", "PASSWORD": "p@ss", "HOST": "db.example.com", "PORT": "6543"}),
    ("postgresql://postgres:@/postgres?host=/tmp/pg",
     {"NAME": "postgres", "USER": "postgres", "HOST": "/tmp/pg", "PORT": ""}),
    ("postgres://localhost/app?sslmode=require", {"HOST": "localhost", "OPTIONS": {"sslmode": "require"}}),
])
def test_parse_database_url(url, expected):
    config = parse_database_url(url)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    for key, value in expected.items():
        assert config[key] == value


def test_parse_database_url_rejects_other_engines():
    with pytest.raises(ValueError):
        parse_database_url("mysql://localhost/app")


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_system_check_requires_postgresql(settings):
    from ddpctl.checks import check_settings
    assert check_settings() == []
    settings.DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3"}}
    assert [e.id for e in check_settings()] == ["ddpctl.E001"]
