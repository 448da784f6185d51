"""Meteor's Random and randomSeed streams: the test vectors of packages/random."""
from ddpctl.ddp.random import (
    UNMISTAKABLE_CHARS,
    RandomGenerator,
    random_id,
    random_secret,
    random_stream,
)


def test_alea_seed_zero_matches_meteor_random_tests():
    gen = RandomGenerator(0)
    assert [gen.id() for _ in range(4)] == [
        "cp9hWvhg8GSvuZ9os", "3f3k6Xo7rrHCifQhR", "shxDnjWWmnKPEoLhM", "6QTjB8C5SEqhmz4ni"]


def test_collection_streams():
    links = random_stream("abc", "/collection/links")
    assert (links.id(), links.id()) == ("EPCGGGYfsRonxugFz", "jHKmmFSfZuTcEqJQZ")
    assert random_stream("abc", "/collection/links").hex_string(24) == "3634448ad6ccfea3fb44cc37"
    assert random_stream("abc", "/collection/tasks").id() == "heudbyRfym38smHdm"
    tasks = random_stream("e2f45ac1b1c9c0a4d1e2", "/collection/tasks")
    assert (tasks.id(), tasks.id()) == ("v6NiFPtaZHbfz65kR", "GLBGLGaNRiavBKX3X")


def test_rpc_seed_stream():
    assert random_stream("abc", "/rpc/foo").hex_string(20) == "5e596937690a30934fc2"


def test_django_ddp_wire_example_id():
    # reference/django-ddp.md 4.3: the id a Meteor client predicted for clientSeed42.
    assert random_stream("clientSeed42", "/collection/bookstore.book").id() == "fhAkhBEgAYMw98g8S"


def test_non_ascii_seed_uses_utf16_code_units():
    # Two generators from the same astral-plane seed agree; a different seed differs.
    assert RandomGenerator("🙂").id() == RandomGenerator("🙂").id()
    assert RandomGenerator("🙂").id() != RandomGenerator("🙃").id()


def test_crypto_ids():
    ids = {random_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 17 and set(i) <= set(UNMISTAKABLE_CHARS) for i in ids)
    assert len(random_secret()) == 43
