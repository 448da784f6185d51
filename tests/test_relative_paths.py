"""Every path the CLI takes may be relative: it is resolved against the current directory
when the command line is read (so a build run in another directory, a reload or a worker
process still finds it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import ROOT

from ddpctl.commands import cli

PATH_WORDS = ("FILE", "DIR", "PATH", "OUT")
NOT_A_PATH_TYPE = {
    ("meteor build", "meteor_path"),  # a path or a command name on PATH: find_meteor
    # URL paths, not files
    ("serve", "metrics_path"), ("serve", "liveness_path"), ("serve", "readiness_path"),
}


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from _commands(command, full + " ")
        else:
            yield full, command


PARAMS = [(name, param) for name, command in _commands(cli) for param in command.params]
PATH_PARAMS = [(name, param) for name, param in PARAMS if isinstance(param.type, click.Path)]
FILE_PARAMS = [(name, param) for name, param in PARAMS if isinstance(param.type, click.File)]  # opened now


def test_every_parameter_naming_a_path_is_a_resolved_click_path():
    named_like_paths = [(name, p.name) for name, p in PARAMS
                        if any(word in (p.metavar or "") for word in PATH_WORDS)
                        or p.name in ("pythonpath", "meteor_bundle", "meteor_settings")]
    assert len(named_like_paths) >= 10
    for name, param_name in named_like_paths:
        if (name, param_name) in NOT_A_PATH_TYPE:
            continue
        param = next(p for n, p in PARAMS if n == name and p.name == param_name)
        assert isinstance(param.type, click.Path | click.File), f"ddpctl {name} {param_name}: not a path type"
    for name, param in PATH_PARAMS:
        assert param.type.resolve_path, f"ddpctl {name} {param.name}: relative paths are not resolved"


@pytest.mark.parametrize(("command", "param"), PATH_PARAMS, ids=[f"{n} {p.name}" for n, p in PATH_PARAMS])
def test_a_relative_path_is_resolved_against_the_current_directory(command, param, tmp_path, monkeypatch):
    kind: click.Path = param.type
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "a-dir").mkdir()
    (tmp_path / "here" / "a-file").write_text("{}")
    monkeypatch.chdir(tmp_path / "here")
    relative = "a-file" if kind.file_okay else "a-dir"
    for text in (relative, f"./{relative}", f"../here/{relative}"):
        got = kind.convert(text, param, None)
        assert os.path.isabs(got) and Path(got) == tmp_path / "here" / relative, (text, got)
    if not kind.exists:  # to be created: resolved all the same
        assert Path(kind.convert("new/place", param, None)) == tmp_path / "here" / "new" / "place"


@pytest.mark.parametrize(("command", "param"), FILE_PARAMS, ids=[f"{n} {p.name}" for n, p in FILE_PARAMS])
def test_a_relative_file_is_opened_from_the_current_directory(command, param, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "changes.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    opened = param.type.convert("sub/changes.jsonl", param, None)
    try:
        assert Path(opened.name).resolve() == tmp_path / "sub" / "changes.jsonl"
        assert opened.read() == "{}\n"
    finally:
        opened.close()


FAKE_METEOR = """#!PYTHON
import sys
from ddpctl.meteor.writer import write_bundle
assert sys.argv[1:3] == ["build", "--directory"], sys.argv
write_bundle(sys.argv[3] + "/bundle", js=b"console.log('built')", css=b"a{}", head="<title>x</title>")
"""


def ddpctl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpctl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def project(tmp_path):
    (tmp_path / "myapp" / ".meteor").mkdir(parents=True)
    (tmp_path / "myapp" / ".meteor" / "release").write_text("METEOR@3.4.1\n")
    fake = tmp_path / "bin" / "meteor"
    fake.parent.mkdir()
    fake.write_text(FAKE_METEOR.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    (tmp_path / "settings.json").write_text('{"public": {"greeting": "hi"}}')
    return tmp_path


@pytest.mark.parametrize("meteor", ["./bin/meteor", "bin/meteor", "bin/../bin/meteor"])
def test_meteor_build_with_relative_paths(project, meteor):
    built = ddpctl("meteor", "build", "myapp", "-o", "out", "--meteor", meteor, cwd=project)
    assert built.returncode == 0, built.stderr
    assert (project / "out" / "bundle" / "star.json").is_file()
    assert f"ddpctl serve --meteor-bundle {project / 'out'}" in built.stdout
    env = ddpctl("meteor", "build", "./myapp", "--output", "./out2", cwd=project,
                 env={"DDPCTL_METEOR": meteor})
    assert env.returncode == 0, env.stderr
    inspected = ddpctl("meteor", "inspect", "out2", "--meteor-settings", "settings.json", "--json",
                       cwd=project)
    assert inspected.returncode == 0, inspected.stderr


def test_meteor_as_a_command_name_on_path(project):
    built = ddpctl("meteor", "build", "myapp", "-o", "out", "--meteor", "meteor", cwd=project,
                   env={"PATH": f"{project / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert built.returncode == 0, built.stderr
    missing = ddpctl("meteor", "build", "myapp", "-o", "out", "--meteor", "./no-such-meteor", cwd=project)
    assert missing.returncode == 1 and "--meteor ./no-such-meteor: not an executable file" in missing.stderr


def test_relative_pythonpath(live_database_url):
    result = ddpctl("migrate", "--check", "--settings", "test_settings", "--pythonpath", "examples/bookstore",
                    "--pythonpath", "./tests", cwd=ROOT, env={"DATABASE_URL": live_database_url})
    assert result.returncode == 0, result.stderr
    env = ddpctl("migrate", "--check", "--settings", "test_settings", cwd=ROOT / "tests",
                 env={"DATABASE_URL": live_database_url,
                      "DDPCTL_PYTHONPATH": f"../examples/bookstore{os.pathsep}."})
    assert env.returncode == 0, env.stderr
