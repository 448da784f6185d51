"""``ddpctl serve`` options set by Django settings: option > environment > setting > default,
the same for every option that has a ``DDPCTL_*`` variable, and system check ``ddpctl.E002``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import click
import pytest
from conftest import PYTHONPATH_ARGS
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.checks import check_settings
from ddpctl.commands.option_settings import (
    UNSETTABLE,
    apply_settings,
    settable_options,
    setting_name,
)
from ddpctl.commands.serve import OTHER_SOURCES, serve
from ddpctl.testing import DDPClient

SETTABLE = settable_options(serve)
# Every variable that may set a serve option, cleared so the machine's environment cannot leak in.
ALL_VARIABLES = sorted({var for p in serve.params if isinstance(p, click.Option)
                        for var in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or ())}
                       | {var for names in OTHER_SOURCES.values() for var in names})
MULTIPLE = {  # values of the options taking lists, by metavar
    "HOST:PORT": [["127.0.0.1:8001"], ["127.0.0.1:8002", ":8003"], ["[::1]:8004"]],
    "ORIGIN": [["https://a.test"], ["https://b.test", "https://*.c.test"], ["null"]],
    "ADDR|CIDR": [["10.0.0.0/8"], ["192.168.0.1", "2001:db8::/32"], ["127.0.0.1"]],
}

SINGLE = {  # values of other options checked by a callback, by metavar
    "PATH": ["/one", "/two/", "/three/3"],  # URL paths (--metrics-path, --liveness-path, ...)
    "HOST:PORT": ["127.0.0.1:9101", ":9102", "[::1]:9103"],  # --metrics-address
}


def test_every_option_but_the_bootstrap_ones_has_a_setting():
    names = {p.name for p in serve.params if isinstance(p, click.Option) and not p.hidden}
    assert names - {o.name for o in SETTABLE.values()} == UNSETTABLE
    assert SETTABLE["DDPCTL_DB_CONNECTIONS"].name == "db_connections"
    assert SETTABLE["DDPCTL_ROOT_URL"].name == "root_url"  # ROOT_URL is an alias, not the setting


def _values(option: click.Option, files: list[str]) -> list[tuple[list[str], str, object]]:
    """Three ways to give three values: (command-line args, environment text, setting value)."""
    kind = option.type
    if option.multiple:
        values = MULTIPLE[option.metavar]
        return [([a for item in v for a in (option.opts[0], item)], " ".join(v), v) for v in values]
    if option.is_flag:
        on, off = option.opts[0], (option.secondary_opts or [None])[0]
        return [([on], "true", True), ([off] if off else [], "false", False), ([on], "1", True)]
    if isinstance(kind, click.Choice):
        choices = list(kind.choices) * 3
        return [([option.opts[0], c], c, c) for c in choices[:3]]
    if isinstance(kind, click.IntRange):
        low = kind.min or 0
        return [([option.opts[0], str(n)], str(n), n) for n in (low + 1, low + 7, low + 30)]
    if isinstance(kind, click.FloatRange):
        low = kind.min or 0
        return [([option.opts[0], str(n)], str(n), n) for n in (low + 0.5, low + 2, low + 9.25)]
    if kind.name == "bytes":
        return [([option.opts[0], "128K"], "128K", 131072), ([option.opts[0], "2M"], "2M", "2M"),
                ([option.opts[0], str(3 << 20)], str(3 << 20), 3 << 20)]
    if isinstance(kind, click.Path):
        return [([option.opts[0], f], f, f) for f in files]
    if option.metavar in SINGLE:
        return [([option.opts[0], v], v, v) for v in SINGLE[option.metavar]]
    return [([option.opts[0], f"https://{n}.test/"], f"https://{n}.test/", f"https://{n}.test/")
            for n in ("one", "two", "three")]


def _parse(args: list[str], env: dict[str, str], setting: dict[str, object]) -> dict[str, object]:
    with mock.patch.dict(os.environ, env):
        for var in ALL_VARIABLES:
            if var not in env:
                os.environ.pop(var, None)
        ctx = serve.make_context("serve", list(args))
        values = dict(ctx.params)
        apply_settings(ctx, values, SimpleNamespace(**setting), other_sources=OTHER_SOURCES)
    return values


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    out = []
    for name in ("a.pem", "b.pem", "c.pem"):
        (root / name).write_text("x")
        out.append(str(root / name))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SETTABLE)), sources=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       picks=st.permutations([0, 1, 2]))
def test_option_beats_environment_beats_setting_beats_default(files, name, sources, picks):
    option = SETTABLE[name]
    values = _values(option, files)
    given_option, given_env, given_setting = sources
    given_option = given_option and bool(values[picks[0]][0])  # a flag without --no-x: only on
    args = values[picks[0]][0] if given_option else []
    env = {name: values[picks[1]][1]} if given_env else {}
    setting = {name: values[picks[2]][2]} if given_setting else {}
    got = _parse(args, env, setting)[option.name]
    # What the winning source alone gives.
    if given_option:
        expected = _parse(args, {}, {})[option.name]
    elif given_env:
        expected = _parse([], env, {})[option.name]
    elif given_setting:
        expected = _parse(values[picks[2]][0], {}, {})[option.name]  # as if given as the option
    else:
        expected = _parse([], {}, {})[option.name]
    assert got == expected


def test_a_setting_yields_to_the_other_variables_of_its_option():
    # Meteor's ROOT_URL (a second Click variable) and SERVER_WEBSOCKET_COMPRESSION (read by a callback)
    setting = {"DDPCTL_ROOT_URL": "https://setting.test/", "DDPCTL_WEBSOCKET_COMPRESSION": True}
    got = _parse([], {"ROOT_URL": "https://env.test/", "SERVER_WEBSOCKET_COMPRESSION": "0"}, setting)
    assert got["root_url"] == "https://env.test/" and got["websocket_compression"] is False
    got = _parse([], {}, setting)
    assert got["root_url"] == "https://setting.test/" and got["websocket_compression"] is True


def test_a_setting_is_converted_like_the_option(files, tmp_path, monkeypatch):
    got = _parse([], {}, {"DDPCTL_SEND_BUFFER_LIMIT": "1M", "DDPCTL_LISTEN": [":9000"],
                          "DDPCTL_HEARTBEAT_INTERVAL": 2})
    assert got["send_buffer_limit"] == 1 << 20 and got["listen"] == [("0.0.0.0", 9000)]
    assert got["heartbeat_interval"] == 2.0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundle").mkdir()
    got = _parse([], {}, {"DDPCTL_METEOR_BUNDLE": "bundle"})  # a relative path: from the cwd
    assert got["meteor_bundle"] == str(tmp_path / "bundle")


WRONG = [object(), "not valid", -1, 1.5, True, [object()], {"a": 1}]


@pytest.mark.parametrize("name", sorted(SETTABLE))
def test_every_serve_setting_is_checked_by_E002(name):
    """A value of the wrong type or out of range is reported by name, never raises."""
    if name == "DDPCTL_ALLOWED_ORIGINS":
        expected_id = "ddpctl.E011"  # its own check
    else:
        expected_id = "ddpctl.E002"
    flagged = 0
    for wrong in WRONG:
        ctx = serve.make_context("serve", [])
        try:
            apply_settings(ctx, dict(ctx.params), SimpleNamespace(**{name: wrong}))
        except click.ClickException as exc:
            assert name in exc.message
            with override_settings(**{name: wrong}):
                problems = [p for p in check_settings() if name in p.msg]
                from ddpctl.checks import check_origins_and_session_login
                problems += [p for p in check_origins_and_session_login() if name in p.msg]
            assert [p.id for p in problems] == [expected_id], (wrong, problems)
            flagged += 1
        else:
            with override_settings(**{name: wrong}):
                assert not [p for p in check_settings() if name in p.msg], wrong
    assert flagged >= 4  # object(), a dict, a list of objects and at least one more
    assert setting_name(SETTABLE[name]) == name


@pytest.mark.parametrize(("values", "expected"), [
    ({"DDPCTL_LISTEN": "127.0.0.1:8000"}, "DDPCTL_LISTEN must be a list of HOST:PORT strings"),
    ({"DDPCTL_HEARTBEAT_TIMEOUT": "15"}, "DDPCTL_HEARTBEAT_TIMEOUT must be a number of seconds, not '15'"),
    ({"DDPCTL_MAX_CHUNKED_BODY": "1K"}, "below the minimum of 64K"),
    ({"DDPCTL_FORWARDED_HEADER": "via"}, "DDPCTL_FORWARDED_HEADER must be one of"),
])
def test_serve_refuses_an_invalid_setting_in_one_line(live_database_url, values, expected):
    """Even one its option overrides (--listen is given here): settings.py has a mistake."""
    result = subprocess.run([sys.executable, "-m", "ddpctl", "serve", "--settings", "settings_serve_options",
                             *PYTHONPATH_ARGS, "--listen", "127.0.0.1:0"],
                            env={**os.environ, "TEST_DDPCTL_SETTINGS": json.dumps(values),
                                 "DATABASE_URL": live_database_url},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert expected in result.stderr.strip().splitlines()[-1]


def test_a_live_server_uses_the_setting_unless_the_environment_says_otherwise(start_server):
    def fourth_subscription(live):
        with DDPClient(live.ws_url) as client:
            client.connect()
            for n in range(3):
                client.subscribe("echo_params", n)
            client.send({"msg": "sub", "id": "fourth", "name": "echo_params", "params": []})
            while True:
                reply = client.recv()
                if reply.get("msg") in ("ready", "nosub") and "fourth" in (reply.get("id"),
                                                                          *reply.get("subs", [])):
                    return reply

    values = json.dumps({"DDPCTL_MAX_SUBSCRIPTIONS": 3})
    live = start_server("--settings", "settings_serve_options", env={"TEST_DDPCTL_SETTINGS": values})
    nosub = fourth_subscription(live)
    assert nosub["msg"] == "nosub" and nosub["error"]["error"] == 429
    live = start_server("--settings", "settings_serve_options",
                        env={"TEST_DDPCTL_SETTINGS": values, "DDPCTL_MAX_SUBSCRIPTIONS": "4"})
    assert fourth_subscription(live) == {"msg": "ready", "subs": ["fourth"]}
