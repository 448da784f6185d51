"""The resume tokens of Meteor logins (Meteor's ``services.resume.loginTokens``)."""
from django.conf import settings
from django.db import models


class LoginToken(models.Model):
    """One resume token: only ``base64(sha256(token))`` is stored, never the token.

    ``when`` is the login time (the token expires ``DDPCTL_ACCOUNTS_LOGIN_EXPIRATION_DAYS``
    after it); ``password_mark`` ties the token to the user's password hash at login (an
    HMAC of it, see :func:`ddpctl.accounts.tokens.password_mark`): a new password revokes it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    hashed_token = models.CharField(max_length=44, unique=True)
    when = models.DateTimeField()
    password_mark = models.CharField(max_length=64)

    class Meta:
        db_table = "ddpctl_accounts_logintoken"

    def __str__(self) -> str:
        return f"login token {self.pk} of user {self.user_id}"
