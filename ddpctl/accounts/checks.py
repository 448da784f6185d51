"""System checks of ``ddpctl.accounts`` (``ddpctl.E03x`` errors, ``ddpctl.W03x`` warnings)."""
from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register

from . import conf


@register("ddpctl")
def check_accounts(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """``E030``: a bad ``DDPCTL_ACCOUNTS_LOGIN_EXPIRATION_DAYS``; ``E031``: a bad
    ``DDPCTL_ACCOUNTS_USER_FIELDS``; ``E032``: a bad ``DDPCTL_ACCOUNTS_AMBIGUOUS_ERRORS``,
    ``DDPCTL_ACCOUNTS_ALLOW_CREATE_USER``, ``DDPCTL_ACCOUNTS_RESET_PASSWORD_URL`` or
    ``DDPCTL_ACCOUNTS_PASSWORD_MAX_LENGTH``; ``W030``: the first ``PASSWORD_HASHERS`` entry does not
    accept Meteor's digest (``Meteor.loginWithPassword`` then fails for new passwords)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import get_hasher
    from django.core.exceptions import FieldDoesNotExist

    from .hashers import MeteorDigestMixin

    problems: list[Error | Warning] = []
    try:
        conf.login_expiration()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E030"))
    try:
        fields = conf.user_fields()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E031"))
    else:
        model = get_user_model()
        for name in fields:
            if name in conf.KNOWN_DOCUMENT_FIELDS:
                continue
            try:
                model._meta.get_field(name)
            except FieldDoesNotExist:
                problems.append(Error(f"DDPCTL_ACCOUNTS_USER_FIELDS names {name!r}, which is neither "
                                      f"username, emails, profile nor a field of {model._meta.label}.",
                                      id="ddpctl.E031"))
    for read in (conf.ambiguous_errors, conf.allow_create_user, conf.reset_password_url,
                 conf.password_max_length):
        try:
            read()
        except ValueError as exc:
            problems.append(Error(str(exc), id="ddpctl.E032"))
    try:
        first = get_hasher()
    except Exception as exc:  # an unimportable hasher: Django's own checks and logins report it
        problems.append(Warning(f"PASSWORD_HASHERS cannot be loaded: {exc}", id="ddpctl.W030"))
    else:
        if not isinstance(first, MeteorDigestMixin):
            problems.append(Warning(
                f"the first PASSWORD_HASHERS entry ({type(first).__name__}) does not accept Meteor's "
                "password digest: Meteor.loginWithPassword fails for every user.",
                hint="Put ddpctl.accounts.hashers.MeteorPBKDF2PasswordHasher first in PASSWORD_HASHERS "
                     "(existing hashes are upgraded at each user's next login).",
                id="ddpctl.W030"))
    return problems
