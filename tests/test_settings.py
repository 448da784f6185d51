"""Settings for the test suite: the bookstore plus a test-only app.

The database: ``DATABASE_URL`` (what the test fixtures hand to server processes), else
``DDPCTL_TEST_DATABASE_URL``, else an embedded PostgreSQL in ``.pytest-pgdata`` of this
checkout (``DDPCTL_TEST_PGDATA`` to put it elsewhere; git-ignored), kept between runs so
only the first run pays for ``initdb``, and stopped at the end of each run (conftest.py).
"""
import os
import tempfile
from pathlib import Path

import django

from ddpctl.database import database_settings, parse_database_url

# The bookstore's settings read DATABASE_URL, else start the example's own embedded PostgreSQL
# (in examples/bookstore/.pgdata): a placeholder while they are imported keeps the suite off it.
_environ_url = os.environ.get("DATABASE_URL")
os.environ["DATABASE_URL"] = "postgresql://test-settings-replace-this/"
try:
    from bookstore.settings import *  # noqa: F403
finally:
    if _environ_url is None:
        del os.environ["DATABASE_URL"]
    else:
        os.environ["DATABASE_URL"] = _environ_url

# ddpctl.accounts comes with the bookstore's apps.
INSTALLED_APPS = INSTALLED_APPS + ["django.contrib.postgres", "testapp"]  # noqa: F405
if "django.contrib.sessions" not in INSTALLED_APPS:  # Django sessions, for DDPCTL_SESSION_LOGIN tests
    INSTALLED_APPS += ["django.contrib.sessions"]
ROOT_URLCONF = "testapp.urls"  # the bookstore's, plus test-only views
# Fast hashes for the tests (the bookstore's PBKDF2 one stays accepted).
PASSWORD_HASHERS = ["ddpctl.accounts.hashers.MeteorMD5PasswordHasher", *PASSWORD_HASHERS]  # noqa: F405
DDPCTL_ACCOUNTS_ALLOW_CREATE_USER = os.environ.get("DDPCTL_TEST_ALLOW_CREATE_USER") == "1"
DDPCTL_ACCOUNTS_AMBIGUOUS_ERRORS = os.environ.get("DDPCTL_TEST_METEOR2_ERRORS") != "1"
# Meteor's default rate limit on login (5 per 10 s per connection), unless a test of many logins turns it off
DDPCTL_RATE_LIMIT_DEFAULT_RULE = os.environ.get("DDPCTL_TEST_DEFAULT_RATE_LIMIT", "1") == "1"
_mail_dir = os.environ.get("DDPCTL_TEST_EMAIL_DIR", str(Path(tempfile.gettempdir()) / "ddpctl-test-mail"))
if django.VERSION >= (6, 1):  # MAILERS replaced EMAIL_BACKEND
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                           "OPTIONS": {"file_path": _mail_dir}}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = _mail_dir

_url = os.environ.get("DATABASE_URL") or os.environ.get("DDPCTL_TEST_DATABASE_URL")
if _url:
    DATABASES = {"default": {**parse_database_url(_url), "CONN_HEALTH_CHECKS": True}}
else:
    DATABASES = {"default": database_settings(embedded_dir=os.environ.get(
        "DDPCTL_TEST_PGDATA", Path(__file__).resolve().parent.parent / ".pytest-pgdata"))}
