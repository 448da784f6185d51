"""Password hashers whose hashes also accept Meteor's SHA-256 digest.

Meteor clients never send the password: ``Meteor.loginWithPassword`` sends
``{digest: sha256_hex(password), algorithm: "sha-256"}``.  These hashers store Django's
usual hash *of that digest* (``meteor_`` + the wrapped hasher's algorithm, e.g.
``meteor_pbkdf2_sha256$1000000$salt$hash``), so that

- Django's own ``check_password(password)`` / ``authenticate()`` keep working: the hasher
  digests the password first, then does what the wrapped hasher does;
- a Meteor login checks the digest it received with :func:`verify_digest`.

Put one first in ``PASSWORD_HASHERS``, keeping Django's defaults after it::

    PASSWORD_HASHERS = ["ddpctl.accounts.hashers.MeteorPBKDF2PasswordHasher",
                        *global_settings.PASSWORD_HASHERS]

Existing users' hashes are upgraded the way Django upgrades any hash: at their next
successful Django login (or plaintext DDP login), ``check_password`` re-hashes the password
with the first hasher.  Until then only plaintext logins work for them (a digest cannot be
checked against a hash of the password); :func:`verify_digest` says so in the log.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.contrib.auth.hashers import (
    Argon2PasswordHasher,
    BasePasswordHasher,
    BCryptSHA256PasswordHasher,
    MD5PasswordHasher,
    PBKDF2PasswordHasher,
    ScryptPasswordHasher,
    identify_hasher,
)

__all__ = ["meteor_digest", "MeteorDigestMixin", "MeteorPBKDF2PasswordHasher", "MeteorArgon2PasswordHasher",
           "MeteorBCryptSHA256PasswordHasher", "MeteorScryptPasswordHasher", "MeteorMD5PasswordHasher",
           "accepts_digest", "verify_digest"]

logger = logging.getLogger(__name__)


class _Digest(str):
    """A password already turned into Meteor's digest (not digested again)."""


def meteor_digest(password: str) -> str:
    """Meteor's ``Accounts._hashPassword(password).digest``: lowercase hex SHA-256 of UTF-8."""
    return hashlib.sha256(password.encode()).hexdigest()


class MeteorDigestMixin:
    """Put before a Django hasher class: hashes and checks ``meteor_digest(password)``.

    ``algorithm`` must be set to ``"meteor_" + <the wrapped hasher's algorithm>``.
    """

    @staticmethod
    def _digested(password: Any) -> Any:
        if isinstance(password, _Digest) or password is None:
            return password
        if isinstance(password, bytes):
            password = password.decode()
        return _Digest(meteor_digest(password))

    def encode(self, password: Any, *args: Any, **kwargs: Any) -> str:
        return super().encode(self._digested(password), *args, **kwargs)  # type: ignore[misc]

    def verify(self, password: Any, encoded: str) -> bool:
        return super().verify(self._digested(password), encoded)  # type: ignore[misc]

    def harden_runtime(self, password: Any, encoded: str) -> None:
        super().harden_runtime(self._digested(password), encoded)  # type: ignore[misc]

    def verify_digest(self, digest: str, encoded: str) -> bool:
        """True if ``digest`` (Meteor's SHA-256 hex of the password) matches ``encoded``."""
        return self.verify(_Digest(digest), encoded)


class MeteorPBKDF2PasswordHasher(MeteorDigestMixin, PBKDF2PasswordHasher):
    """Django's default PBKDF2-SHA256 around the Meteor digest."""

    algorithm = "meteor_pbkdf2_sha256"


class MeteorArgon2PasswordHasher(MeteorDigestMixin, Argon2PasswordHasher):
    algorithm = "meteor_argon2"


class MeteorBCryptSHA256PasswordHasher(MeteorDigestMixin, BCryptSHA256PasswordHasher):
    """bcrypt, like Meteor's own ``services.password.bcrypt`` (of the same digest)."""

    algorithm = "meteor_bcrypt_sha256"


class MeteorScryptPasswordHasher(MeteorDigestMixin, ScryptPasswordHasher):
    algorithm = "meteor_scrypt"


class MeteorMD5PasswordHasher(MeteorDigestMixin, MD5PasswordHasher):
    """Fast and weak: for test suites only (like Django's ``MD5PasswordHasher``)."""

    algorithm = "meteor_md5"


def accepts_digest(encoded: str | None) -> bool:
    """True if ``encoded`` (a user's ``password`` field) was made by a Meteor hasher."""
    if not encoded:
        return False
    try:
        hasher: BasePasswordHasher = identify_hasher(encoded)
    except ValueError:  # unusable password ("!..."), or a hasher no longer configured
        return False
    return isinstance(hasher, MeteorDigestMixin)


def verify_digest(digest: str, encoded: str | None) -> bool:
    """True if Meteor's ``digest`` matches the hash ``encoded``; False for a hash that no
    Meteor hasher made (logged at info level: the user must log in once with the password)."""
    if not encoded:
        return False
    try:
        hasher = identify_hasher(encoded)
    except ValueError:
        return False
    if not isinstance(hasher, MeteorDigestMixin):
        logger.info("a digest login met a %r password hash: it accepts Meteor digests once re-hashed "
                    "(at the user's next Django or plaintext login)", hasher.algorithm)
        return False
    return hasher.verify_digest(digest, encoded)
