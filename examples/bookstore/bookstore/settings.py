"""Settings of the bookstore example.

With no ``DATABASE_URL`` the example runs on an embedded PostgreSQL kept in
``examples/bookstore/.pgdata`` (started on first use, stopped with the last process).
"""
import os
from pathlib import Path

import django

from ddpctl.database import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "bookstore-example-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost 127.0.0.1 [::1]").split()

INSTALLED_APPS = [
    "django.contrib.admin",  # /admin/: its CSS comes from django.contrib.staticfiles (below)
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # `ddpctl serve` serves STATIC_URL with it under DEBUG, as runserver
    "ddpctl",
    "ddpctl.accounts",  # Meteor logins on django.contrib.auth (login, resume tokens, users)
    "bookstore",
]
# Meteor clients send a SHA-256 digest of the password: hashes made by this hasher accept it,
# and Django's own logins keep working (older hashes are upgraded at the next login).
PASSWORD_HASHERS = [
    "ddpctl.accounts.hashers.MeteorPBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# Password reset e-mails go to the console (Django 6.1 replaced EMAIL_BACKEND with MAILERS).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "bookstore.urls"
WSGI_APPLICATION = "bookstore.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
# Django's static files (the admin's CSS): served by `ddpctl serve` itself under DEBUG; in
# production run `collectstatic` into STATIC_ROOT and serve it with WhiteNoise or a proxy.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

DATABASES = {"default": database_settings(embedded_dir=BASE_DIR / ".pgdata")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The front end: a bundle in `meteor build`'s format (see frontend/build.py), served at /
# with hot code push.  Django keeps the URLs its URLconf routes (the /django/ page).
DDPCTL_METEOR_BUNDLE = BASE_DIR / "frontend" / "bundle"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
