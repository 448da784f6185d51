"""Password reset e-mails and tokens (Meteor's ``forgotPassword`` / ``resetPassword``).

The token is ``<uidb64>.<token>``: the user's id in URL-safe base64 and a token of Django's
``default_token_generator`` (valid ``PASSWORD_RESET_TIMEOUT`` seconds, and no longer once
the password or ``last_login`` changed).  The e-mail goes through Django's e-mail backend
(``EMAIL_BACKEND``, ``DEFAULT_FROM_EMAIL``); its subject and body are the templates
``ddpctl/accounts/reset_password_subject.txt`` and ``ddpctl/accounts/reset_password_email.txt``
(override them in a project's template directory) with ``user``, ``url`` and ``token``.
The link is ``DDPCTL_ACCOUNTS_RESET_PASSWORD_URL`` with ``{token}`` and ``{root}`` filled in,
by default ``{root}/#/reset-password/{token}``, Meteor's ``Accounts.urls.resetPassword``.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.template import engines
from django.template.loader import render_to_string
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode

__all__ = ["make_reset_token", "user_for_reset_token", "send_reset_email"]

logger = logging.getLogger(__name__)

_DEFAULT_SUBJECT = "How to reset your password"
_DEFAULT_BODY = ("Hello,\n\nTo reset your password, simply click the link below.\n\n{{ url }}\n\n"
                 "Thanks.\n")


def make_reset_token(user: Any) -> str:
    return f"{urlsafe_base64_encode(force_bytes(user.pk))}.{default_token_generator.make_token(user)}"


def user_for_reset_token(token: str) -> Any:
    """The user a valid, unexpired reset token is for, else ``None``."""
    uidb64, dot, inner = token.partition(".")
    if not dot:
        return None
    model = get_user_model()
    try:
        pk = model._meta.pk.to_python(force_str(urlsafe_base64_decode(uidb64)))
        user = model._default_manager.filter(pk=pk).first()
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError, ValidationError) as exc:
        logger.debug("unreadable password reset token: %s", exc)
        return None
    if user is None or not default_token_generator.check_token(user, inner):
        return None
    return user


def _render(name: str, fallback: str, context: dict[str, Any]) -> str:
    if engines.all():
        try:
            return render_to_string(f"ddpctl/accounts/{name}", context)
        except Exception as exc:  # TemplateDoesNotExist, or templates not set up for this app
            logger.debug("template ddpctl/accounts/%s not used (%s)", name, exc)
    text = fallback
    for key, value in context.items():
        text = text.replace("{{ " + key + " }}", str(value))
    return text


def send_reset_email(user: Any, address: str, root: str) -> None:
    """E-mail ``address`` a link that resets ``user``'s password (``root``: the site's
    ``scheme://host``, for ``{root}`` in the link)."""
    from . import conf

    token = make_reset_token(user)
    url = conf.reset_password_url().replace("{root}", root).replace("{token}", token)
    context = {"user": user, "url": url, "token": token}
    subject = " ".join(_render("reset_password_subject.txt", _DEFAULT_SUBJECT, context).split())
    body = _render("reset_password_email.txt", _DEFAULT_BODY, context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])
    logger.info("sent a password reset e-mail to user %s", user.pk)
