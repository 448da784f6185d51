"""Meteor accounts (issue 12, part A): login, resume, logout, tokens, password methods,
revocation on every node, the ``users`` document, universal publications."""
from __future__ import annotations

import datetime
import email
import email.policy
import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import eventually, wait_for
from django.contrib.auth.hashers import make_password
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websocket import WebSocketConnectionClosedException

from ddpctl.accounts.tokens import hash_token
from ddpctl.ddp.errors import MeteorError
from ddpctl.testing import DDPClient

AMBIGUOUS = "Something went wrong. Please check your credentials."
LOGGED_OUT = "You've been logged out by the server. Please log in again."


def digest(password: str) -> dict:
    return {"digest": hashlib.sha256(password.encode()).hexdigest(), "algorithm": "sha-256"}


@pytest.fixture
def users(sql):
    """Create users straight in the database (``make_user(username, password, ...)`` -> id)."""
    sql("TRUNCATE ddpctl_accounts_logintoken, auth_user RESTART IDENTITY CASCADE")

    def make_user(username, password="pw", email="", active=True, hasher="meteor_md5"):
        encoded = make_password(password, hasher=hasher) if password is not None else make_password(None)
        return sql("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, "
                   "is_staff, is_active, date_joined) "
                   "VALUES (%s, false, %s, 'Ada', 'Lovelace', %s, false, %s, now()) RETURNING id",
                   [encoded, username, email, active], fetch=True)[0][0]

    return make_user


@pytest.fixture
def start_server(start_server):
    """Servers without Meteor's default rate limit on ``login``: these tests log in many times
    on one connection (the limit itself is tested in test_rate_limit_live.py)."""
    def start(*args, env=None):
        return start_server(*args, env={"DDPCTL_TEST_DEFAULT_RATE_LIMIT": "0", **(env or {})})
    return start


@pytest.fixture
def live(start_server, users):
    return start_server()


def login(client, username, password="pw"):
    return client.call("login", {"user": {"username": username}, "password": digest(password)})


def me(client):
    return client.collections.get("users", {})


def expect_error(client, method, *params):
    with pytest.raises(MeteorError) as info:
        client.call(method, *params)
    return info.value


# -- login ------------------------------------------------------------------------------


def test_digest_login_returns_a_token_and_publishes_the_user(live, users):
    uid = users("ada", "s3cret", email="ada@example.com")
    with DDPClient(live.ws_url) as client:
        client.connect()
        before = time.time()
        result = client.call("login", {"user": {"username": "ADA"}, "password": digest("s3cret")})
        assert result["id"] == str(uid) and result["type"] == "password"
        assert len(result["token"]) == 43
        expires = result["tokenExpires"]
        assert isinstance(expires, datetime.datetime)
        assert abs(expires.timestamp() - (before + 90 * 86400)) < 60
        wait_for(client, lambda c: str(uid) in me(c))
        assert me(client)[str(uid)] == {"username": "ada", "emails": [{"address": "ada@example.com",
                                                                         "verified": False}],
                                        "profile": {"name": "Ada Lovelace"}}


@pytest.mark.parametrize("selector", ["email", "id", "username"])
def test_login_by_email_id_or_username_any_case(live, users, selector):
    uid = users("Grace", "pw", email="Grace@Example.com")
    value = {"email": "grace@EXAMPLE.com", "id": str(uid), "username": "gRACE"}[selector]
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert client.call("login", {"user": {selector: value}, "password": digest("pw")})["id"] == str(uid)


def test_two_users_differing_in_case_only_match_exactly(live, users):
    users("bob", "one")
    upper = users("BOB", "two")
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert login(client, "BOB", "two")["id"] == str(upper)
        bob = {"user": {"username": "Bob"}, "password": digest("two")}
        assert expect_error(client, "login", bob).error == 403


def test_plaintext_login_upgrades_a_django_hash_so_digests_work_after(live, users, sql):
    uid = users("old", "legacy pw", hasher="pbkdf2_sha256")
    with DDPClient(live.ws_url) as client:
        client.connect()
        # A digest cannot be checked against a hash of the password itself...
        assert expect_error(client, "login", {"user": {"username": "old"},
                                              "password": digest("legacy pw")}).reason == AMBIGUOUS
        # ... a plaintext login can, and re-hashes the password with the first hasher.
        assert client.call("login", {"user": {"username": "old"}, "password": "legacy pw"})["id"] == str(uid)
    encoded = sql("SELECT password FROM auth_user WHERE id = %s", [uid], fetch=True)[0][0]
    assert encoded.startswith("meteor_md5$")
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert login(client, "old", "legacy pw")["id"] == str(uid)


def test_wrong_credentials_give_the_ambiguous_403_and_leave_the_user_unchanged(live, users):
    users("eve", "right")
    users("nopass", None)
    users("inactive", "pw", active=False)
    with DDPClient(live.ws_url) as client:
        client.connect()
        for options in ({"user": {"username": "eve"}, "password": digest("wrong")},
                        {"user": {"username": "eve"}, "password": "wrong"},
                        {"user": {"username": "nobody"}, "password": digest("right")},
                        {"user": {"email": "nobody@example.com"}, "password": "right"},
                        {"user": {"username": "nopass"}, "password": digest("")},
                        {"user": {"username": "inactive"}, "password": digest("pw")},
                        {"user": {"username": "inactive"}, "password": "pw"}):
            error = expect_error(client, "login", options)
            assert (error.error, error.reason) == (403, AMBIGUOUS), options
        assert me(client) == {}


def test_meteor2_messages_when_ambiguous_errors_are_off(start_server, users):
    live = start_server(env={"DDPCTL_TEST_METEOR2_ERRORS": "1"})
    users("eve", "right")
    users("nopass", None)
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert expect_error(client, "login", {"user": {"username": "eve"},
                                              "password": digest("x")}).reason == "Incorrect password"
        assert expect_error(client, "login", {"user": {"username": "zed"},
                                              "password": digest("x")}).reason == "User not found"
        assert expect_error(client, "login", {"user": {"username": "nopass"},
                                              "password": digest("x")}).reason == "User has no password set"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
option_keys = st.sampled_from(["user", "password", "resume", "code", "digest", "algorithm", "username", "x"])
login_options = st.dictionaries(option_keys, json_values | st.fixed_dictionaries(
    {"digest": st.text(min_size=64, max_size=64), "algorithm": st.sampled_from(["sha-256", "md5"])}) |
    st.dictionaries(st.sampled_from(["id", "username", "email", "other"]), json_values, max_size=2),
    max_size=4)


def _meteor_class(options) -> set[tuple[int, str]]:
    """The errors Meteor 3 may answer ``options`` with (no user 'zed' exists)."""
    if not isinstance(options, dict):
        return {(400, "Match failed")}
    if options.get("resume"):
        return {(400, "Match failed"), (403, LOGGED_OUT)}
    if options.get("password"):
        return {(400, "Match failed"), (403, AMBIGUOUS)}
    return {(400, "Unrecognized options for login request")}


def test_login_option_shapes_get_meteors_errors_never_a_500(live, users):
    with DDPClient(live.ws_url) as client:
        client.connect()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.one_of(login_options, json_values))
        def check(options):
            if isinstance(options, dict) and isinstance(options.get("user"), dict):
                options["user"] = {k: ("zed" if isinstance(v, str) and v else v)
                                   for k, v in options["user"].items()}
            error = expect_error(client, "login", options)
            assert (error.error, error.reason) in _meteor_class(options), (options, error)

        check()
        assert me(client) == {}


def test_login_without_params_or_with_extra_params_is_match_failed(live):
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert expect_error(client, "login").reason == "Match failed"
        assert expect_error(client, "login", {}, {}).reason == "Match failed"


# -- resume, logout, tokens -------------------------------------------------------------


def test_resume_after_reconnect_returns_the_same_token_and_expiry(live, users):
    uid = users("ada")
    with DDPClient(live.ws_url) as first:
        first.connect()
        result = login(first, "ada")
    with DDPClient(live.ws_url) as again:
        again.connect()
        resumed = again.call("login", {"resume": result["token"]})
        assert resumed == {**result, "type": "resume"}
        wait_for(again, lambda c: str(uid) in me(c))


def test_resume_errors(live, users, sql):
    users("ada")
    with DDPClient(live.ws_url) as client:
        client.connect()
        token = login(client, "ada")["token"]
        assert expect_error(client, "login", {"resume": "x" * 43}).reason == LOGGED_OUT
        assert expect_error(client, "login", {"resume": 42}).reason == "Match failed"
        sql("UPDATE ddpctl_accounts_logintoken SET \"when\" = now() - interval '91 days'")
        eventually(lambda: _closed(client))  # its token expired: closed, as when Meteor expires tokens
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert expect_error(client, "login", {"resume": token}).reason == \
            "Your session has expired. Please log in again."
        assert sql("SELECT count(*) FROM ddpctl_accounts_logintoken", fetch=True)[0][0] == 0
        assert expect_error(client, "login", {"resume": token}).reason == LOGGED_OUT


def test_logout_destroys_the_token_and_unpublishes_the_user(live, users):
    uid = users("ada")
    with DDPClient(live.ws_url) as client:
        client.connect()
        token = login(client, "ada")["token"]
        wait_for(client, lambda c: str(uid) in me(c))
        assert client.call("logout") is None
        assert me(client) == {}
        assert expect_error(client, "login", {"resume": token}).reason == LOGGED_OUT


def test_get_new_token_and_remove_other_tokens(live, users, sql):
    users("ada")
    with DDPClient(live.ws_url) as a, DDPClient(live.ws_url) as b:
        a.connect()
        b.connect()
        assert expect_error(a, "getNewToken").error == "You are not logged in."
        assert expect_error(a, "removeOtherTokens").error == "You are not logged in."
        first = login(a, "ada")
        other = login(b, "ada")
        renewed = a.call("getNewToken")
        assert renewed["token"] != first["token"] and renewed["tokenExpires"] == first["tokenExpires"]
        assert "type" not in renewed
        a.call("removeOtherTokens")
        left = {r[0] for r in sql("SELECT hashed_token FROM ddpctl_accounts_logintoken", fetch=True)}
        assert left == {hash_token(renewed["token"])}
        # b's token is gone: the server closes b (like Meteor); its resume then fails.
        eventually(lambda: _closed(b))
    with DDPClient(live.ws_url) as c:
        c.connect()
        assert expect_error(c, "login", {"resume": other["token"]}).reason == LOGGED_OUT
        assert c.call("login", {"resume": renewed["token"]})["type"] == "resume"


def _closed(client) -> bool:
    client.ws.settimeout(0.2)
    try:
        while True:
            client.recv()
    except WebSocketConnectionClosedException:
        return True
    except Exception as exc:  # a timeout: still open
        return "closed" in str(exc).lower() and "timed out" not in str(exc).lower()


# -- revocation everywhere --------------------------------------------------------------


@pytest.mark.parametrize("revoke", ["logout elsewhere", "deactivate", "new password", "delete token"])
def test_a_token_revoked_on_one_node_closes_its_connections_on_another(start_server, users, sql, revoke):
    node_a, node_b = start_server(), start_server()
    uid = users("ada", "pw")
    with DDPClient(node_a.ws_url) as on_a, DDPClient(node_b.ws_url) as on_b, \
            DDPClient(node_b.ws_url) as bystander:
        on_a.connect()
        on_b.connect()
        bystander.connect()
        users_token = login(on_a, "ada")["token"]
        assert on_b.call("login", {"resume": users_token})["type"] == "resume"
        users("other", "pw")
        login(bystander, "other")
        if revoke == "logout elsewhere":
            on_a.call("logout")
        elif revoke == "deactivate":
            sql("UPDATE auth_user SET is_active = false WHERE id = %s", [uid])
        elif revoke == "new password":
            sql("UPDATE auth_user SET password = %s WHERE id = %s",
                [make_password("new", hasher="meteor_md5"), uid])
        else:
            sql("DELETE FROM ddpctl_accounts_logintoken WHERE hashed_token = %s", [hash_token(users_token)])
        eventually(lambda: _closed(on_b))
        assert bystander.call("echo", 1) == [1]  # the other user's connection lives on
    with DDPClient(node_b.ws_url) as again:
        again.connect()
        assert expect_error(again, "login", {"resume": users_token}).reason == LOGGED_OUT


# -- password methods -------------------------------------------------------------------


def test_create_user_is_off_unless_enabled(live):
    with DDPClient(live.ws_url) as client:
        client.connect()
        error = expect_error(client, "createUser", {"username": "new", "password": digest("pw")})
        assert (error.error, error.reason) == (403, "Signups forbidden")


def test_create_user_logs_in_and_django_authenticate_works(start_server, users, sql):
    live = start_server(env={"DDPCTL_TEST_ALLOW_CREATE_USER": "1"})
    with DDPClient(live.ws_url) as client:
        client.connect()
        result = client.call("createUser", {"username": "neo", "email": "neo@example.com",
                                            "password": digest("red pill")})
        assert result["type"] == "password" and len(result["token"]) == 43
        wait_for(client, lambda c: result["id"] in me(c))
        assert expect_error(client, "createUser", {"username": "NEO", "password": "x"}).reason == AMBIGUOUS
        assert expect_error(client, "createUser", {"password": "x"}).reason == \
            "Need to set a username or email"
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert client.call("login", {"user": {"email": "neo@example.com"}, "password": "red pill"})["id"] == \
            result["id"]
    encoded = sql("SELECT password FROM auth_user WHERE username = 'neo'", fetch=True)[0][0]
    from django.contrib.auth.hashers import check_password
    assert check_password("red pill", encoded) and not check_password("blue pill", encoded)


def test_change_password_keeps_this_connection_and_logs_out_the_others(live, users):
    users("ada", "old")
    with DDPClient(live.ws_url) as a, DDPClient(live.ws_url) as b:
        a.connect()
        b.connect()
        assert expect_error(a, "changePassword", digest("old"), digest("new")).error == 401
        login(a, "ada", "old")
        login(b, "ada", "old")
        assert expect_error(a, "changePassword", digest("bad"), digest("new")).reason == AMBIGUOUS
        assert a.call("changePassword", digest("old"), digest("new")) == {"passwordChanged": True}
        eventually(lambda: _closed(b))
        assert a.call("echo", "still here") == ["still here"]
    with DDPClient(live.ws_url) as c:
        c.connect()
        assert expect_error(c, "login", {"user": {"username": "ada"}, "password": digest("old")}).error == 403
        assert login(c, "ada", "new")["type"] == "password"


def sent_mail(directory: Path) -> list[email.message.EmailMessage]:
    """The messages Django's file-based e-mail backend wrote in ``directory`` (a body may be
    quoted-printable: Django 6 encodes lines over 78 characters so)."""
    texts = "".join(path.read_text() for path in sorted(directory.iterdir())).split("-" * 79 + "\n")
    return [email.message_from_string(text.lstrip("\n"), policy=email.policy.default)
            for text in texts if text.strip()]


def test_forgot_and_reset_password(start_server, users, tmp_path):
    mail = tmp_path / "mail"
    live = start_server(env={"DDPCTL_TEST_EMAIL_DIR": str(mail)})
    uid = users("ada", "forgotten", email="ada@example.com")
    with DDPClient(live.ws_url) as client:
        client.connect()
        stale = login(client, "ada", "forgotten")["token"]
        assert expect_error(client, "forgotPassword", {"email": "nobody@example.com"}).reason == AMBIGUOUS
        assert client.call("forgotPassword", {"email": "ADA@example.com"}) is None
        [sent] = sent_mail(mail)
        assert sent["To"] == "ada@example.com"
        token = sent.get_content().split("/#/reset-password/")[1].split()[0]
        assert expect_error(client, "resetPassword", token + "x", digest("new")).reason == "Token expired"
        result = client.call("resetPassword", token, digest("brand new"))
        assert result["id"] == str(uid) and result["type"] == "password"
        assert expect_error(client, "resetPassword", token, digest("again")).reason == "Token expired"
    with DDPClient(live.ws_url) as client:
        client.connect()
        assert expect_error(client, "login", {"resume": stale}).reason == LOGGED_OUT
        assert client.call("login", {"resume": result["token"]})["type"] == "resume"
        assert login(client, "ada", "brand new")["id"] == str(uid)


# -- signals, secrecy -------------------------------------------------------------------


def test_django_auth_signals_fire_without_secrets(live, users):
    users("ada", "pw")
    with DDPClient(live.ws_url) as client:
        client.connect()
        login(client, "ada")
        expect_error(client, "login", {"user": {"username": "ada"}, "password": digest("wrong")})
        client.call("logout")
        seen = client.call("auth_signals")
    assert [s[:2] for s in seen] == [["user_logged_in", "ada"], ["user_login_failed", None],
                                     ["user_logged_out", "ada"]]
    assert seen[1][2] == {"username": "ada"}


def test_tokens_are_never_stored_or_logged_in_clear(start_server, users, sql):
    live = start_server("--log-level", "debug")
    users("ada", "pw")
    tokens = []
    with DDPClient(live.ws_url) as client:
        client.connect()
        tokens.append(login(client, "ada")["token"])
        tokens.append(client.call("getNewToken")["token"])
        client.call("login", {"resume": tokens[0]})
        expect_error(client, "login", {"resume": tokens[0] + "x"})
    dump = json.dumps(sql("SELECT row_to_json(t)::text FROM ddpctl_accounts_logintoken t", fetch=True)) + \
        json.dumps(sql("SELECT row_to_json(c)::text FROM ddpctl_change c", fetch=True), default=str) + \
        json.dumps(sql("SELECT row_to_json(u)::text FROM auth_user u", fetch=True))
    log = live.output()
    for token in tokens:
        assert token not in dump and token not in log
        assert hash_token(token) in dump or token == tokens[0]


# -- universal publications -------------------------------------------------------------


def test_universal_publication_runs_without_sub_and_reruns_on_login(live, users):
    uid = users("ada")
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.call("login_as", "nobody-yet")  # the test-only login: the users doc follows it too
        wait_for(client, lambda c: len(me(c)) == 1)
        login(client, "ada")
        wait_for(client, lambda c: set(me(c)) == {str(uid)})
        client.call("logout")
        assert me(client) == {}
        # It is not reachable by name.
        client.send({"msg": "sub", "id": "s", "name": "ddpctl.accounts.current_user", "params": []})
        reply = client.recv()
        assert reply["msg"] == "nosub" and reply["error"]["error"] == 404


def test_users_collection_is_live(live, users, sql):
    uid = users("ada")
    with DDPClient(live.ws_url) as client:
        client.connect()
        login(client, "ada")
        wait_for(client, lambda c: str(uid) in me(c))
        sql("UPDATE auth_user SET first_name = 'Augusta' WHERE id = %s", [uid])
        wait_for(client, lambda c: me(c)[str(uid)]["profile"] == {"name": "Augusta Lovelace"})

