"""Meteor accounts (accounts-base, accounts-password) on ``django.contrib.auth``.

Add ``"ddpctl.accounts"`` to ``INSTALLED_APPS`` (after ``django.contrib.auth`` and
``ddpctl``) and run ``ddpctl migrate``.  Meteor clients then log in with
``Meteor.loginWithPassword``, resume with their token after a reconnect and read
``Meteor.user()``.  Modules, one concept each:

- :mod:`.conf`: the ``DDPCTL_ACCOUNTS_*`` settings;
- :mod:`.hashers`: password hashers that accept Meteor's SHA-256 digest;
- :mod:`.tokens`: resume tokens (random, stored hashed, expiring) and the ``LoginToken`` rules;
- :mod:`.lookup`: finding a user from Meteor's ``{id}|{username}|{email}`` selector;
- :mod:`.login`: the ``password`` and ``resume`` login handlers and logging a connection in;
- :mod:`.revocation`: closing connections whose token was revoked, on every node;
- :mod:`.users`: the ``users`` collection and its universal publication;
- :mod:`.reset`: password reset e-mails and tokens;
- :mod:`.ddp`: the DDP methods (``login``, ``logout``, ``createUser`` ...).
"""
