"""Issue 15 (item 7): secrets in params never reach the registry, ``subs ls`` or logs, and
``Match failed`` replies carry no Python detail (Meteor's sanitized ``Match.Error``)."""
from __future__ import annotations

import json
import logging
import string

import pytest
from conftest import eventually
from hypothesis import given
from hypothesis import strategies as st
from test_live_data import author, insert_book

from ddpctl import redaction
from ddpctl.ddp.session import Session
from ddpctl.redaction import (
    REDACTED,
    declare_sensitive,
    forget_sensitive,
    is_secret_key,
    redact_message,
    redact_params,
    redact_params_json,
    redact_text,
)
from ddpctl.testing import DDPClient

# Meteor's wire object for a failed check(): Match.Error's sanitizedError (check/match.js).
MATCH_FAILED = {"isClientSafe": True, "error": 400, "reason": "Match failed", "message": "Match failed [400]",
                "errorType": "Meteor.Error"}

CASES = st.sampled_from([str, str.lower, str.upper])
PREFIXES = st.sampled_from(["", "new", "old_", "user", "X-", "client_"])
# Long stems match anywhere in a key; short ones as a whole word (else "author" would be secret).
SECRET_KEYS = st.builds(
    lambda prefix, stem, case: case(prefix + stem), PREFIXES,
    st.sampled_from(["password", "Password", "passwd", "Token", "secret", "ApiKey", "api_key", "credentials",
                     "sessionId", "authorization", "PrivateKey", "cookie", "Signature", "passphrase"]), CASES,
) | st.builds(
    lambda prefix, separator, stem, case: (case(prefix + separator + stem) if separator
                                           else prefix + stem.title()),
    PREFIXES, st.sampled_from(["_", "-", ""]),
    st.sampled_from(["key", "auth", "pass", "pwd", "pin", "otp", "jwt"]), CASES,
)
# A secret no other generated text contains by chance.
SECRETS = st.text(string.ascii_letters + string.digits, min_size=10, max_size=20).map(lambda s: "S3CR3T" + s)
PLAIN_KEYS = st.sampled_from(["title", "author", "pages", "keyword", "monkey", "sort", "limit", "id", "tags"])
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.text(string.ascii_lowercase, max_size=8)


def json_trees(leaves):
    return st.recursive(leaves, lambda children: st.lists(children, max_size=3)
                        | st.dictionaries(PLAIN_KEYS, children, max_size=3), max_leaves=12)


@st.composite
def params_with_a_secret(draw):
    """Nested params (a list) holding, somewhere, ``{secret-looking key: value holding the secret}``."""
    secret = draw(SECRETS)
    value = draw(st.sampled_from([secret, [secret], {"title": secret}, {"a": [1, secret]}]))
    holder = {draw(SECRET_KEYS): value}
    tree = draw(json_trees(JSON_LEAVES))
    path = draw(st.lists(st.sampled_from(["list", "dict"]), max_size=4))
    node = holder
    for step in path:  # bury it
        node = [draw(JSON_LEAVES), node] if step == "list" else {draw(PLAIN_KEYS): node}
    return [tree, node], secret


@given(params_with_a_secret(), st.sampled_from(["echo_params", "BooksWithCode", "not_registered"]))
def test_a_secret_looking_key_never_shows_its_value(case, name):
    params, secret = case
    assert secret in json.dumps(params)
    assert secret not in json.dumps(redact_params("publication", name, params))
    assert secret not in redact_params_json("publication", name, json.dumps(params))
    message = {"msg": "method", "id": 1, "method": name, "params": params}
    assert secret not in repr(redact_message(message))
    text = json.dumps(message)
    for cut in (len(text), len(text) // 2, len(text) - 3):  # a frame cut short does not parse
        shown = redact_text(text[:cut])
        assert secret not in shown
    assert params == json.loads(json.dumps(params))  # the params themselves are left as they were


@given(json_trees(JSON_LEAVES))
def test_params_without_secret_keys_are_unchanged(params):
    assert redact_params("publication", "echo_params", [params]) == [params]
    assert json.loads(redact_params_json("publication", "echo_params", json.dumps([params]))) == [params]


@pytest.mark.parametrize("key", ["password", "newPassword", "accessToken", "X-Api-Key", "api_key",
                                 "AUTH_TOKEN", "client_secret", "credentials", "pin", "otp", "sessionId",
                                 "Authorization",
                                 "sortKey", "jwt", "refresh_token", "passphrase", "privateKey"])
def test_secret_looking_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["author", "authorId", "title", "keyword", "monkey", "pinned", "passenger",
                                 "topic", "pages", "name", "email"])
def test_keys_that_are_not_secret(key):
    assert not is_secret_key(key)


def test_declared_positions_names_and_parameter_names():
    def handler(sub, email, code, password, options=None):
        pass

    declare_sensitive("publication", "t.declared", [1, "hint"], handler, skip=1)
    try:
        params = ["a@b.c", "1234", "pw", {"hint": "x", "Hint": {"y": 1}, "mode": "m"}, "extra"]
        out = redact_params("publication", "t.declared", params)
        # 1: declared position; "password": a secret-looking parameter name; "hint": a declared name
        assert out == ["a@b.c", REDACTED, REDACTED, {"hint": REDACTED, "Hint": REDACTED, "mode": "m"},
                       "extra"]
        declare_sensitive("publication", "t.declared", True, handler, skip=1)
        assert redact_params("publication", "t.declared", [1, {"a": 2}]) == [REDACTED, REDACTED]
    finally:
        forget_sensitive("publication", "t.declared")


@pytest.mark.parametrize("bad", ["code", 3.5, [True], [-1], [None], {"x": 1}])
def test_invalid_declarations_are_refused(bad):
    with pytest.raises(TypeError, match="sensitive_params"):
        declare_sensitive("method", "t.bad", bad)


def test_the_setting_adds_patterns():
    assert not is_secret_key("iban")
    redaction.configure([r"^iban$", "recovery"])
    try:
        assert is_secret_key("IBAN") and is_secret_key("recoveryCodes") and not is_secret_key("ibans")
        redacted = redact_params("method", "x", [{"iban": "DE00", "title": "t"}])
        assert redacted == [{"iban": REDACTED, "title": "t"}]
    finally:
        redaction.configure(None)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        redaction.configure(["("])
    redaction.configure(None)


def test_bad_frames_are_logged_without_secrets(caplog):
    session = Session(has_method=bool, has_publication=bool)
    caplog.set_level(logging.DEBUG, logger="ddpctl.ddp.session")
    session.receive('{"msg":"connect","version":"1","support":["1"]}')
    # a method frame that is malformed (id not a string), and one that does not parse
    malformed = {"msg": "method", "id": 7, "method": "sign_in",
                 "params": ["bob", "S3CR3T-positional", {"token": "S3CR3T-keyed"}]}
    for queued in session.receive(json.dumps(malformed)):
        session.process(queued.message)
    session.receive('{"msg":"method","id":"1","method":"x","params":[{"apiKey":"S3CR3T-cut')
    text = caplog.text
    assert "Malformed method invocation" in text and "Bad request" in text
    assert "S3CR3T" not in text
    assert REDACTED in text and "bob" in text


# -- a real server -----------------------------------------------------------------------

def test_registry_subs_ls_and_logs_never_show_secret_params(start_server, clean, sql, ddpctl):
    live = start_server("--log-level", "debug", "--node-heartbeat", "0.2")
    author(sql)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("echo_params", "visible", {"user": {"name": "ann", "accessToken": "S3CR3T-a"}},
                         [{"password": "S3CR3T-b"}])
        client.subscribe("BooksWithCode", 0, "S3CR3T-c", {"apiKey": "S3CR3T-d", "title": "shown"})
        client.subscribe("secret_echo", "S3CR3T-e", 42)
        wanted = {"echo_params", "BooksWithCode", "secret_echo"}  # (a node of another test may linger)
        query = "SELECT publication, params FROM ddpctl_subscription ORDER BY publication"
        eventually(lambda: wanted <= {row[0] for row in sql(query, fetch=True)})
        stored = [row for row in sql(query, fetch=True) if row[0] in wanted]
        table = ddpctl("subs", "ls").stdout
        listed = json.loads(ddpctl("subs", "ls", "--json").stdout)
        # a failing query logs its observer (with the params it was made for)
        insert_book(sql, "Zero pages", 0)
        eventually(lambda: "failed; ending its subscriptions" in live.output())
    everything = json.dumps(stored) + table + json.dumps(listed) + live.output()
    assert "S3CR3T" not in everything
    assert dict(stored) == {
        "echo_params":
            '["visible",{"user":{"name":"ann","accessToken":"[redacted]"}},[{"password":"[redacted]"}]]',
        "BooksWithCode": '[0,"[redacted]",{"apiKey":"[redacted]","title":"shown"}]',
        "secret_echo": '["[redacted]","[redacted]"]',
    }
    assert {row["publication"]: row["params"] for row in listed}["BooksWithCode"] == [
        0, REDACTED, {"apiKey": REDACTED, "title": "shown"}]
    assert "visible" in table and "shown" in table


def test_match_failed_carries_no_python_detail(start_server):
    live = start_server()
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.send({"msg": "sub", "id": "s1", "name": "BooksWithCode", "params": []})
        client.send({"msg": "sub", "id": "s2", "name": "echo_params", "params": []})  # *params: fits
        client.send({"msg": "method", "id": "m1", "method": "sign_in", "params": ["bob"]})
        replies = {}
        while len(replies) < 3:
            msg = client.recv()
            if msg.get("msg") in ("nosub", "result", "ready"):
                key = msg.get("id") or msg["subs"][0]
                replies[key] = msg
    assert replies["s1"] == {"msg": "nosub", "id": "s1", "error": MATCH_FAILED}
    assert replies["m1"] == {"msg": "result", "id": "m1", "error": MATCH_FAILED}
    assert replies["s2"]["msg"] == "ready"
    output = live.output()  # the detail is in the server's log instead
    assert "Match failed: subscription to 'BooksWithCode': missing a required argument: 'min_pages'" in output
    assert "Match failed: method 'sign_in': missing a required argument: 'password'" in output
