"""Django session login (``DDPCTL_SESSION_LOGIN``): a DDP connection whose upgrade request
carries a valid Django session cookie starts logged in as that user; off by default.

Sessions are made by a real Django login (``django.test.Client.login``, database session
engine) in a separate process on the live database.
"""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SERVER_ARGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.testing import DDPClient, LiveServer

SESSION_SETTINGS = [*SERVER_ARGS, "--settings", "settings_session_login"]

# Logs users in through Django; then changes some of them the ways that end a session.
LOGIN_SCRIPT = r"""
import json, sys
import django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

User = get_user_model()
result = {}
for case in ["valid", "other", "password changed", "inactive", "logged out"]:
    username = "session-" + case.replace(" ", "-")
    User.objects.filter(username=username).delete()
    user = User.objects.create_user(username, password="s3cret-pass")
    client = Client()
    assert client.login(username=username, password="s3cret-pass")
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    if case == "password changed":
        user.set_password("another-pass")
        user.save()
    elif case == "inactive":
        user.is_active = False
        user.save()
    elif case == "logged out":
        client.logout()
    result[case] = {"id": str(user.pk), "cookie": cookie, "name": settings.SESSION_COOKIE_NAME}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def sessions(live_database_url):
    """``{case: {"id", "cookie", "name"}}`` for the cases of LOGIN_SCRIPT."""
    env = {**os.environ, "DATABASE_URL": live_database_url, "DJANGO_SETTINGS_MODULE": "test_settings",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "bookstore"), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-c", LOGIN_SCRIPT], env=env, check=True, capture_output=True,
                         text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def session_server(live_database_url):
    """``ddpctl serve`` with ``DDPCTL_SESSION_LOGIN = True``."""
    with LiveServer(SESSION_SETTINGS, env={"DATABASE_URL": live_database_url}) as live:
        yield live


def cookie_of(session):
    return f"{session['name']}={session['cookie']}"


def user_of(url, cookie=None):
    """The user id a new connection with this Cookie header starts with (``None``: logged out)."""
    with DDPClient(url, header=[f"Cookie: {cookie}"] if cookie is not None else []) as client:
        client.connect()
        return client.call("my_user_id")


@pytest.mark.parametrize("transport", ["raw", "sockjs"])
def test_a_valid_session_cookie_logs_the_connection_in(session_server, sessions, sql, transport):
    url = session_server.ws_url if transport == "raw" else session_server.sockjs_url
    valid, other = sessions["valid"], sessions["other"]
    sql("DELETE FROM testapp_note WHERE owner_id IN (%s, %s)", [valid["id"], other["id"]])
    sql("INSERT INTO testapp_note (owner_id, text, shared) VALUES (%s, 'private of valid', false), "
        "(%s, 'private of other', false)", [valid["id"], other["id"]])
    cookie = f"theme=dark; {cookie_of(valid)}; csrftoken=abc"  # among other cookies
    with DDPClient(url, header=[f"Cookie: {cookie}"]) as client:
        client.connect()
        assert client.call("my_user_id") == valid["id"]
        client.subscribe("MyNotes")  # the publication sees the user: its own private note
        texts = {n["text"] for n in client.collections.get("testapp.note", {}).values()}
        assert "private of valid" in texts and "private of other" not in texts
    assert user_of(url, cookie_of(other)) == other["id"]
    assert user_of(url) is None


@pytest.mark.parametrize("case", ["password changed", "inactive", "logged out"])
def test_sessions_django_would_refuse_do_not_log_in(session_server, sessions, case):
    assert user_of(session_server.ws_url, cookie_of(sessions[case])) is None


def test_other_cookies_do_not_log_in(session_server, sessions):
    valid = sessions["valid"]
    assert user_of(session_server.ws_url, f"not{valid['name']}={valid['cookie']}") is None
    assert user_of(session_server.ws_url, f"{valid['name']}=") is None
    assert user_of(session_server.ws_url, "garbage without equals sign") is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# VT and FF are not allowed in a header value at all (RFC 9110 5.5): the HTTP layer answers 400.
@given(key=st.text(st.characters(codec="ascii", exclude_characters=";,\r\n\x00\x0b\x0c"), max_size=60))
def test_random_session_keys_never_log_in(session_server, sessions, key):
    assert user_of(session_server.ws_url, f"{sessions['valid']['name']}={key}") is None


def test_session_login_is_off_by_default(server, sessions):
    assert user_of(server.ws_url, cookie_of(sessions["valid"])) is None
    assert user_of(server.sockjs_url, cookie_of(sessions["valid"])) is None
