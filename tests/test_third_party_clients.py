"""Real third-party DDP clients against a live server.

npm ``ddp`` (installed into tests/js/node_modules by scripts/test).
"""
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
