"""The ``ddpctl`` command line: help, errors with one-line messages, exit codes."""
import os
import socket
import subprocess
import sys

import pytest
from conftest import SERVER_ARGS

from ddpctl.config import parse_listen

COMMANDS = [[], ["serve"], ["migrate"], ["subs", "ls"], ["conns", "ls"], ["conns", "close"], ["nodes", "ls"],
            ["tail"], ["replay"], ["changelog", "prune"], ["dbshell"]]


def ddpctl(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ddpctl", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ddpctl")
def test_help(command):
    result = ddpctl(*command, "--help")
    assert result.returncode == 0
    assert "Usage: ddpctl" in result.stdout
    if command:
        assert "Example" in result.stdout


def test_serve_help_names_every_environment_variable():
    out = ddpctl("serve", "--help").stdout
    for var in ["DDPCTL_LISTEN", "DDPCTL_SETTINGS", "DDPCTL_SSL_CERTFILE", "DDPCTL_SSL_KEYFILE",
                "DDPCTL_RELOAD", "DDPCTL_LOG_LEVEL", "DDPCTL_MAX_FRAME_SIZE", "DDPCTL_PYTHONPATH",
                "DDPCTL_NODE_HEARTBEAT"]:
        assert var in out


def test_version():
    result = ddpctl("--version")
    assert result.returncode == 0 and "ddpctl, version" in result.stdout


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_missing_settings_module():
    result = ddpctl("serve", "--settings", "no_such_project.settings", env={"DJANGO_SETTINGS_MODULE": ""})
    assert "cannot import settings module 'no_such_project.settings'" in one_line_error(result)


def test_no_settings_at_all():
    env = {"DJANGO_SETTINGS_MODULE": "", "DDPCTL_SETTINGS": ""}
    assert "no Django settings" in one_line_error(ddpctl("serve", env=env))


def test_port_in_use(live_database_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ddpctl("serve", *SERVER_ARGS, "--listen", f"127.0.0.1:{port}",
                        env={"DATABASE_URL": live_database_url})
    line = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert "is another server, perhaps ddpctl serve, running on it?" in line


def test_missing_tls_file(tmp_path):
    result = ddpctl("serve", *SERVER_ARGS, "--ssl-certfile", str(tmp_path / "nope.pem"))
    assert "does not exist" in one_line_error(result)


def test_invalid_tls_file(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = ddpctl("serve", *SERVER_ARGS, "--ssl-certfile", str(bad))
    assert "cannot load the TLS certificate/key" in one_line_error(result)


def test_unreadable_tls_file(tmp_path):
    if os.geteuid() == 0:
        # root reads any file; make the path a directory instead, which is unreadable as a file
        target = tmp_path / "dir.pem"
        target.mkdir()
    else:
        target = tmp_path / "secret.pem"
        target.write_text("x")
        target.chmod(0)
    result = ddpctl("serve", *SERVER_ARGS, "--ssl-certfile", str(target))
    assert "--ssl-certfile" in one_line_error(result)


def test_bad_listen_address():
    result = ddpctl("serve", *SERVER_ARGS, "--listen", "localhost:http")
    assert "invalid port" in one_line_error(result)


def test_listen_from_environment(live_database_url):
    from ddpctl.testing import DDPClient, free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ddpctl", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "DATABASE_URL": live_database_url,
                                 "DDPCTL_LISTEN": f"127.0.0.1:{port}", "DDPCTL_SETTINGS": "test_settings",
                                 "DDPCTL_PYTHONPATH": os.pathsep.join([SERVER_ARGS[3], SERVER_ARGS[5]])})
    try:
        import time
        for _ in range(200):
            try:
                with DDPClient(f"ws://127.0.0.1:{port}/websocket") as client:
                    client.connect()
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not start from environment variables")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    (":9000", ("0.0.0.0", 9000)),
    ("9000", ("127.0.0.1", 9000)),
    ("[::1]:8000", ("::1", 8000)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:99999", "[::1]8000"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)


def test_reload_restarts_the_server_on_code_change(live_database_url, tmp_path):
    import time

    from ddpctl.testing import DDPClient, free_port
    module = tmp_path / "watched.py"
    module.write_text("VALUE = 1\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddpctl", "serve", "--reload", *SERVER_ARGS,
         "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "DATABASE_URL": live_database_url})

    def wait_until_serving():
        for _ in range(300):
            try:
                with DDPClient(f"ws://127.0.0.1:{port}/websocket") as client:
                    client.connect()
                    return
            except (OSError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("server did not come up")

    try:
        wait_until_serving()
        module.write_text("VALUE = 2\n")
        time.sleep(1.5)  # watchfiles debounces, then restarts the child
        wait_until_serving()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert out.count("ddpctl 0.1.0 (pid") == 2, out


def test_migrate_check_names_tables_without_triggers(live_database_url):
    import psycopg2
    env = {"DATABASE_URL": live_database_url}
    assert ddpctl("migrate", "--check", *SERVER_ARGS, env=env).returncode == 0
    conn = psycopg2.connect(live_database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER ddpctl_capture_u ON bookstore_genre")
    try:
        line = one_line_error(ddpctl("migrate", "--check", *SERVER_ARGS, env=env))
        assert "without change-capture triggers: bookstore_genre" in line
    finally:
        result = ddpctl("migrate", "--noinput", *SERVER_ARGS, env=env)
        assert result.returncode == 0 and "Change capture installed on" in result.stdout
        conn.close()
    assert ddpctl("migrate", "--check", *SERVER_ARGS, env=env).returncode == 0


def test_operator_commands_explain_a_missing_migration(tmp_path):
    """Against a database without ddpctl's tables: one line naming the fix."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    import psycopg2

    admin = psycopg2.connect(dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                             port=db["PORT"] or 5432)
    admin.autocommit = True
    name = f"ddpctl_empty_{os.getpid()}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        host = db["HOST"]
        url = (f"postgresql://{db['USER']}@:{db['PORT'] or 5432}/{name}?host={host}" if host.startswith("/")
               else f"postgresql://{db['USER']}@{host}:{db['PORT'] or 5432}/{name}")
        result = ddpctl("subs", "ls", *SERVER_ARGS, env={"DATABASE_URL": url})
        assert result.returncode == 1
        assert 'relation "ddpctl_' in result.stderr and "run: ddpctl migrate" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.parametrize("option", ["--node-heartbeat", "--heartbeat-interval", "--heartbeat-timeout",
                                    "--send-timeout", "--sockjs-heartbeat"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e12"])
def test_serve_refuses_durations_that_are_not_finite_or_too_long(option, value):
    result = subprocess.run([sys.executable, "-m", "ddpctl", "serve", option, value], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert option in result.stderr and "Traceback" not in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", [["migrate", "--noinput"], ["migrate", "--check"], ["subs", "ls"],
                                     ["nodes", "ls"], ["changelog", "prune"]], ids=" ".join)
@pytest.mark.parametrize("kind", ["malformed", "unreachable", "no such database"])
def test_a_bad_database_url_is_a_one_line_error_for_every_command(command, kind):
    """A malformed DATABASE_URL, a server that does not answer, or a database that does not
    exist: exit 1 and one ``Error:`` line naming the problem, never a traceback."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = {
        "malformed": "not a url",
        "unreachable": f"postgresql://postgres@127.0.0.1:{_closed_port()}/x",
        "no such database": (f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/ddpctl_absent_db"
                             if not db["HOST"].startswith("/")
                             else f"postgresql://{db['USER']}@:{db['PORT'] or 5432}/ddpctl_absent_db"
                                  f"?host={db['HOST']}"),
    }[kind]
    result = ddpctl(*command, *SERVER_ARGS, env={"DATABASE_URL": url})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.stderr
    expected = {"malformed": "scheme", "unreachable": "connect", "no such database": "ddpctl_absent_db"}[kind]
    assert expected in result.stderr, result.stderr
