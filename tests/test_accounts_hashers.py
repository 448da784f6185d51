"""The Meteor password hashers and the token helpers, in-process (no server)."""
from __future__ import annotations

import base64
import hashlib

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import check_password, make_password
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.accounts.hashers import accepts_digest, meteor_digest, verify_digest
from ddpctl.accounts.tokens import hash_token
from ddpctl.accounts.validation import check_password_option, check_user_selector
from ddpctl.ddp.errors import MeteorError

passwords = st.text(max_size=40)


@settings(max_examples=40, deadline=None)
@given(passwords, passwords)
def test_meteor_hash_accepts_the_password_and_its_digest_and_nothing_else(password, other):
    encoded = make_password(password, hasher="meteor_md5")
    assert accepts_digest(encoded)
    assert check_password(password, encoded)
    assert verify_digest(meteor_digest(password), encoded)
    if other != password:
        assert not check_password(other, encoded)
        assert not verify_digest(meteor_digest(other), encoded)
    assert not verify_digest(meteor_digest(password).upper(), encoded) or meteor_digest(password).isdigit()


@pytest.mark.parametrize("hasher", ["meteor_pbkdf2_sha256", "meteor_md5"])
def test_each_meteor_hasher_round_trips(hasher, settings):
    settings.PASSWORD_HASHERS = ["ddpctl.accounts.hashers.MeteorPBKDF2PasswordHasher",
                                 "ddpctl.accounts.hashers.MeteorMD5PasswordHasher"]
    encoded = make_password("correct horse", hasher=hasher)
    assert encoded.startswith(hasher + "$")
    assert check_password("correct horse", encoded) and verify_digest(meteor_digest("correct horse"), encoded)
    assert not check_password("wrong horse", encoded)


def test_a_plain_django_hash_rejects_digests():
    encoded = make_password("pw", hasher="pbkdf2_sha256")
    assert not accepts_digest(encoded) and not verify_digest(meteor_digest("pw"), encoded)
    assert not verify_digest(meteor_digest("pw"), "!unusable") and not verify_digest(meteor_digest("pw"), "")


@pytest.mark.django_db
def test_django_authenticate_works_for_meteor_and_older_hashes_and_upgrades_the_older():
    model = get_user_model()
    meteor = model.objects.create_user("meteor", password="pw1")
    assert meteor.password.startswith("meteor_md5$")
    old = model.objects.create(username="old", password=make_password("pw2", hasher="pbkdf2_sha256"))
    assert authenticate(username="meteor", password="pw1") == meteor
    assert authenticate(username="meteor", password="nope") is None
    assert authenticate(username="old", password="pw2") == old
    old.refresh_from_db()
    assert old.password.startswith("meteor_md5$") and verify_digest(meteor_digest("pw2"), old.password)


@given(st.text(max_size=60))
def test_hash_token_is_meteors_base64_sha256(token):
    assert hash_token(token) == base64.b64encode(hashlib.sha256(token.encode()).digest()).decode()
    assert len(hash_token(token)) == 44


def test_hash_token_known_value():
    # Meteor: Accounts._hashLoginToken("abc") (SHA256 base64 of "abc")
    assert hash_token("abc") == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.text()),
                 st.dictionaries(st.sampled_from(["digest", "algorithm", "x"]), st.text(max_size=70))))
def test_password_option_accepts_only_meteors_two_shapes(value):
    ok_string = isinstance(value, str) and len(value) <= 256
    ok_digest = (isinstance(value, dict) and set(value) == {"digest", "algorithm"}
                 and value["algorithm"] == "sha-256" and len(value["digest"]) == 64)
    if ok_string or ok_digest:
        assert check_password_option(value)[1] == ok_digest
    else:
        with pytest.raises(MeteorError) as info:
            check_password_option(value)
        assert (info.value.error, info.value.reason) == (400, "Match failed")


@given(st.dictionaries(st.sampled_from(["id", "username", "email", "other"]),
                       st.one_of(st.text(max_size=3), st.integers()), max_size=3))
def test_user_selector_needs_exactly_one_known_non_empty_string(value):
    valid = (len(value) == 1 and set(value) <= {"id", "username", "email"}
             and all(isinstance(v, str) and v for v in value.values()))
    if valid:
        assert check_user_selector(value) == value
    else:
        with pytest.raises(MeteorError):
            check_user_selector(value)
