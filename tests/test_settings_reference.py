"""Every ``DDPCTL_*`` name the code reads is documented in docs/settings.rst, and every one
that is a Django setting is validated by a system check: a new setting that is neither
fails here, naming it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT
from django.core.checks import Error, run_checks
from django.test import override_settings

import ddpctl.api

SOURCE = ROOT / "ddpctl"
DOCS = ROOT / "docs"
NAME = re.compile(r"\bDDPCTL_[A-Z0-9_]+\b")


def names_in_source() -> dict[str, list[str]]:
    """``{name: [files]}`` of every DDPCTL_* name in ddpctl/ (prefixes such as
    ``DDPCTL_ACCOUNTS_`` in an f-string excluded: their full names appear in their docstrings)."""
    found: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for name in NAME.findall(path.read_text()):
            if not name.endswith("_"):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def section(text: str, title: str) -> str:
    """The body of the RST section titled ``title`` (up to the next title of any level)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title
                 and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("=-~^") and lines[i + 1].strip())
    body = []
    for i in range(start + 2, len(lines)):
        if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) <= set("=-~^") \
                and len(lines[i + 1].strip()) >= len(lines[i].strip()) > 0:
            break
        body.append(lines[i])
    return "\n".join(body)


SETTINGS_DOC = (DOCS / "settings.rst").read_text()
SOURCE_NAMES = names_in_source()
ENVIRONMENT_ONLY = set(NAME.findall(section(SETTINGS_DOC, "Environment variables only")))
DJANGO_SETTINGS = sorted(set(SOURCE_NAMES) - ENVIRONMENT_ONLY)
WRONG = [object(), {"not": "valid"}, [object()], -1, "not valid"]


def test_the_scan_finds_the_settings():
    assert {"DDPCTL_DB_CONNECTIONS", "DDPCTL_CAPTURE_MODELS", "DDPCTL_ROOT_URL", "DDPCTL_DDP_URL",
            "DDPCTL_METEOR_SETTINGS", "DDPCTL_ACCOUNTS_USER_FIELDS", "DDPCTL_LISTEN"} <= set(SOURCE_NAMES)
    assert {"DDPCTL_SETTINGS", "DDPCTL_PYTHONPATH", "DDPCTL_RELOAD", "DDPCTL_METEOR"} <= ENVIRONMENT_ONLY


def test_every_name_the_code_reads_is_documented():
    documented = set(NAME.findall(SETTINGS_DOC))
    missing = {name: files for name, files in SOURCE_NAMES.items() if name not in documented}
    assert not missing, (
        "DDPCTL_* names read in ddpctl/ but not documented in docs/settings.rst (add each with its "
        "default and meaning; a Django setting also needs a system check):\n"
        + "\n".join(f"  {name}  ({', '.join(sorted(set(files)))})"
                    for name, files in sorted(missing.items())))


def test_documented_names_exist():
    """No stale entries: every DDPCTL_* name in docs/settings.rst is read by the code."""
    stale = sorted(set(NAME.findall(SETTINGS_DOC)) - set(SOURCE_NAMES))
    assert not stale, f"docs/settings.rst documents names ddpctl/ never reads: {stale}"


@pytest.mark.parametrize("name", DJANGO_SETTINGS)
def test_every_django_setting_is_validated_by_a_system_check(name):
    """A value of the wrong type is an Error naming the setting, never an exception."""
    unflagged = []
    for wrong in WRONG:
        with override_settings(**{name: wrong}):
            errors = [m for m in run_checks(tags=["ddpctl"]) if isinstance(m, Error) and name in m.msg]
        if not errors:
            unflagged.append(wrong)
    assert len(unflagged) <= 1, (
        f"{name} is a Django setting (not under 'Environment variables only' in docs/settings.rst) "
        f"but no ddpctl system check reports these values: {unflagged!r}")


def test_every_public_name_is_in_the_api_reference():
    text = (DOCS / "api.rst").read_text()
    missing = [name for name in ddpctl.api.__all__ if name not in text]
    assert not missing, f"ddpctl.api exports not described in docs/api.rst: {missing}"


def test_the_readme_links_the_docs():
    readme = (ROOT / "README.rst").read_text()
    for doc in ("docs/deployment.rst", "docs/settings.rst", "docs/api.rst"):
        assert doc in readme and (ROOT / doc).is_file(), doc


def test_every_system_check_id_is_documented():
    ids = {m for path in SOURCE.rglob("*.py") for m in re.findall(r"ddpctl\.[EW]\d{3}", path.read_text())}
    table = section(SETTINGS_DOC, "System checks")
    assert sorted(i for i in ids if f"``{i}``" not in table) == []
    assert Path(DOCS / "settings.rst").is_file()
