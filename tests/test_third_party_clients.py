"""Real third-party DDP clients against a live server.

npm ``ddp`` (installed into tests/js/node_modules by scripts/test).
"""
import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"


def run_node_client(port, method, params, publication=None, sockjs=False):
    node = shutil.which("node")
    assert node, "Node.js is needed for the third-party client tests (see scripts/test)"
    assert (JS / "node_modules" / "ddp").is_dir(), \
        "npm packages are missing: run scripts/test (it runs 'npm ci' in tests/js)"
    args = [node, str(JS / "ddp_call.js"), str(port), method, json.dumps(params)]
    if publication:
        args.append(publication)
    result = subprocess.run(args, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "USE_SOCKJS": "1" if sockjs else "0"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no output from the npm ddp client: {result.stdout}\n{result.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("sockjs", [False, True], ids=["raw", "sockjs"])
def test_npm_ddp_client_connects_and_calls_a_method(server, sockjs):
    out = run_node_client(server.port, "echo", [1, "two", {"three": 3}], sockjs=sockjs)
    assert out["ok"], out
    assert len(out["session"]) == 17
    assert out["result"] == [1, "two", {"three": 3}]


def test_npm_ddp_client_adds_a_book_and_subscribes(server):
    out = run_node_client(server.port, "books.add", ["Neuromancer", "william@gibson.com", 271], "numbers")
    assert out["ok"], out
    assert isinstance(out["result"], int)
    assert {k: v["value"] for k, v in out["docs"].items()} == {"0": 0, "1": 1}


def test_npm_ddp_client_sees_method_errors(server):
    out = run_node_client(server.port, "meteor_error", [])
    assert not out["ok"]
    assert out["error"]["error"] == "not-allowed" and out["error"]["reason"] == "You may not"


def test_simpleddp_login_plugin_logs_in_with_a_digest_resumes_and_logs_out(start_server, sql):
    """Meteor's login from a third-party client library (npm simpleddp-plugin-login)."""
    from django.contrib.auth.hashers import make_password

    sql("TRUNCATE ddpctl_accounts_logintoken, auth_user RESTART IDENTITY CASCADE")
    uid = sql("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, "
              "is_staff, is_active, date_joined) "
              "VALUES (%s, false, 'trinity', '', '', 't@example.com', false, true, now()) RETURNING id",
              [make_password("follow the white rabbit")], fetch=True)[0][0]
    live = start_server()
    node = shutil.which("node")
    assert node and (JS / "node_modules" / "simpleddp-plugin-login").is_dir(), "run scripts/test (npm ci)"
    result = subprocess.run([node, str(JS / "simpleddp_login.js"), str(live.port), "Trinity",
                             "follow the white rabbit"], capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no output from simpleddp: {result.stdout}\n{result.stderr}"
    out = json.loads(lines[-1])
    assert out["ok"], out
    assert out["login"]["id"] == str(uid) and out["login"]["type"] == "password"
    assert out["login"]["tokenLength"] == 43
    # An EJSON date: the client made it a Date (printed here in ISO form), 90 days ahead.
    expires = datetime.datetime.fromisoformat(out["login"]["tokenExpires"].replace("Z", "+00:00"))
    assert abs((expires - datetime.datetime.now(datetime.UTC)).days - 90) <= 1
    expected_doc = {"id": str(uid), "username": "trinity",  # simpleddp keeps _id as "id"
                    "emails": [{"address": "t@example.com", "verified": False}], "profile": {}}
    assert out["usersAfterLogin"] == [expected_doc], out
    assert out["resume"] == {"id": str(uid), "type": "resume", "sameToken": True}
    assert [d["id"] for d in out["usersAfterResume"]] == [str(uid)]
    assert out["afterLogout"] == "You are not logged in." and out["loggedInAfterLogout"] is False
    assert sql("SELECT count(*) FROM ddpctl_accounts_logintoken", fetch=True)[0][0] == 0
