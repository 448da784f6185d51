"""The mergebox's sole-owner path (a document one subscription alone publishes, messages an
observer already diffed let through as they are) against Meteor's precedence lists
(``SessionView(sole=False)``): for any interleaving of ``added``/``changed``/``removed`` and
unsubscriptions from 1-3 overlapping subscriptions, both give the same messages, and the
client that applies them sees what the view says, after every step.  A welcome (a new
subscriber's documents, ``added_many``) is one of the steps."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.ddp.ejson import equals
from ddpctl.ddp.mergebox import MergeboxError, SessionView
from ddpctl.livedata.observer import diff_fields

HANDLES = ("A", "B", "C")
DOCS = (("books", "1"), ("books", "2"), ("books", "3"), ("authors", "1"))
KEYS = ("title", "year", "tags", "_id")
# Values that are EJSON-equal without being identical (1 and 1.0, NaN) included.
VALUES = st.sampled_from([1, 1.0, 2, "x", "y", None, True, math.nan, [1, 2], {"k": 1}, {"k": 1.0}])
FIELDS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4)

# (kind, handle, document, fields, cleared): kinds "publish" (added, or a diffed changed if
# the subscription holds the document), "remove", "unsub", "raw" (a low-level publication's
# changed(): not diffed, values may equal what the client has).
OPS = st.lists(st.tuples(st.sampled_from(["publish", "publish", "remove", "unsub", "raw", "welcome"]),
                         st.sampled_from(HANDLES), st.sampled_from(DOCS), FIELDS,
                         st.lists(st.sampled_from(KEYS), max_size=2, unique=True)),
               max_size=40)


def _message(op, collection, doc_id, fields=None, cleared=None):
    """What PreparedMessage.text encodes."""
    msg = {"msg": op, "collection": collection, "id": doc_id}
    if fields:
        msg["fields"] = fields
    if cleared:
        msg["cleared"] = cleared
    return msg


def _apply(client, messages):
    """A DDP client's copy of the documents; asserts the messages are valid for it."""
    for msg in messages:
        key = (msg["collection"], msg["id"])
        if msg["msg"] == "added":
            assert key not in client, msg
            client[key] = dict(msg.get("fields", {}))
        elif msg["msg"] == "changed":
            assert key in client, msg
            assert msg.get("fields") or msg.get("cleared"), msg
            client[key].update(msg.get("fields", {}))
            for name in msg.get("cleared", ()):
                client[key].pop(name, None)
        else:
            assert key in client, msg
            del client[key]


def _flat(view):
    return {(name, doc_id): fields
            for name, docs in view.snapshot().items() for doc_id, fields in docs.items()}


def _same(a, b):
    return a.keys() == b.keys() and all(
        x.keys() == y.keys() and all(equals(x[k], y[k]) for k in x) for x, y in ((a[d], b[d]) for d in a))


@settings(max_examples=400, deadline=None)
@given(OPS, st.booleans())
def test_sole_owner_path_matches_precedence_lists(ops, whole):
    """``whole``: a diffed ``changed`` also carries the observer's whole documents before and
    after (what ``Observer.apply`` passes), so a sole document may take ``after`` as it is."""
    fast, reference = SessionView(), SessionView(sole=False)
    published = {h: {} for h in HANDLES}  # what each subscription has sent: its observer's state
    fast_client, reference_client = {}, {}
    for kind, handle, (collection, doc_id), fields, cleared in ops:
        mine = published[handle]
        key = (collection, doc_id)
        if kind == "unsub":
            out_fast, out_ref = fast.remove_subscription(handle), reference.remove_subscription(handle)
            mine.clear()
        elif kind == "remove":
            if key not in mine:
                continue
            del mine[key]
            out_fast = fast.apply_diffed(handle, "removed", collection, doc_id)
            if out_fast is None:
                out_fast = [_message("removed", collection, doc_id)]
            out_ref = reference.removed(handle, collection, doc_id)
        elif kind == "welcome":  # the documents it does not hold yet, in one batch
            batch = [(c, d) for c, d in DOCS if c == collection and (c, d) not in mine]
            if not batch:
                continue
            outs = fast.added_many(handle, collection, [(d, fields) for _, d in batch])
            assert len(outs) == len(batch)
            out_fast, out_ref = [], []
            for (_, d), out in zip(batch, outs, strict=True):
                mine[(collection, d)] = fields  # one dict for all: the view must not change it
                out_fast += [_message("added", collection, d, fields)] if out is None else out
                out_ref += reference.added(handle, collection, d, fields)
        elif kind == "raw":
            if key not in mine:
                continue
            values = {k: v for k, v in fields.items() if k not in cleared}
            state = {k: v for k, v in {**mine[key], **values}.items() if k not in cleared}
            mine[key] = state
            out_fast = fast.changed(handle, collection, doc_id, values, cleared)
            out_ref = reference.changed(handle, collection, doc_id, values, cleared)
        elif key in mine:  # the observer diffs the new state against what it sent
            before = mine[key]
            changed, gone = diff_fields(before, fields)
            mine[key] = fields
            if not (changed or gone):
                continue
            out_fast = fast.apply_diffed(handle, "changed", collection, doc_id, changed, gone,
                                         *((before, fields) if whole else ()))
            if out_fast is None:
                out_fast = [_message("changed", collection, doc_id, changed, gone)]
            out_ref = reference.changed(handle, collection, doc_id, changed, gone)
        else:
            mine[key] = fields
            out_fast = fast.apply_diffed(handle, "added", collection, doc_id, fields)
            if out_fast is None:
                out_fast = [_message("added", collection, doc_id, fields)]
            out_ref = reference.added(handle, collection, doc_id, fields)
        _apply(fast_client, out_fast)
        _apply(reference_client, out_ref)
        # Same messages (ignoring _id, which neither lets through), same client-visible state.
        for client in (fast_client, reference_client):
            for doc in client.values():
                doc.pop("_id", None)
        assert _same(fast_client, reference_client), (out_fast, out_ref)
        assert _same(fast_client, _flat(fast))
        assert _same(_flat(fast), _flat(reference))
        for handle_ in HANDLES:
            assert fast.held(handle_) == reference.held(handle_)


def test_a_welcome_keeps_the_observers_fields_and_merges_what_is_held_already():
    view = SessionView()
    assert view.added("B", "books", "2", {"title": "b"}) == [
        {"msg": "added", "collection": "books", "id": "2", "fields": {"title": "b"}}]
    one, two = {"title": "a"}, {"title": "c", "year": 1}
    outs = view.added_many("A", "books", [("1", one), ("2", two), ("3", {"_id": "3", "year": 2})])
    assert outs[0] is None  # new to the view: sent as given, the very dict kept
    assert outs[1] == [{"msg": "changed", "collection": "books", "id": "2", "fields": {"year": 1}}]
    assert outs[2] == [{"msg": "added", "collection": "books", "id": "3", "fields": {"year": 2}}]
    assert view.held("A") == {"books": 3}
    assert view.apply_diffed("A", "changed", "books", "1", {"title": "x"}) is None
    assert one == {"title": "a"}  # copied before its first change
    assert view.document("books", "1") == {"title": "x"}


def test_a_diffed_message_for_a_sole_document_is_forwarded_as_given():
    view = SessionView()
    fields = {"title": "a", "year": 1}
    assert view.apply_diffed("A", "added", "books", "1", fields) is None
    assert view.apply_diffed("A", "changed", "books", "1", {"year": 2}, ["title"]) is None
    assert fields == {"title": "a", "year": 1}  # the observer's dict is never changed
    assert view.document("books", "1") == {"year": 2}
    assert view.apply_diffed("A", "removed", "books", "1") is None
    assert view.document("books", "1") is None


def test_overlap_turns_to_precedence_lists_and_back():
    view = SessionView()
    assert view.apply_diffed("A", "added", "books", "1", {"title": "a"}) is None
    assert view.added("B", "books", "1", {"title": "b", "year": 1}) == [
        {"msg": "changed", "collection": "books", "id": "1", "fields": {"year": 1}}]
    # B's title is hidden behind A's: the mergebox decides, not the observer.
    assert view.apply_diffed("B", "changed", "books", "1", {"title": "c"}) == []
    assert view.apply_diffed("A", "removed", "books", "1") == [
        {"msg": "changed", "collection": "books", "id": "1", "fields": {"title": "c"}}]
    # B alone again: its next diffed change goes through as it is.
    assert view.apply_diffed("B", "changed", "books", "1", {"year": 2}) is None
    assert view.document("books", "1") == {"title": "c", "year": 2}


def test_removing_a_document_of_another_subscription_still_raises():
    view = SessionView()
    view.apply_diffed("A", "added", "books", "1", {})
    try:
        view.apply_diffed("B", "removed", "books", "1")
    except MergeboxError:
        pass
    else:
        raise AssertionError("expected MergeboxError")


def test_a_sole_document_shares_the_observers_dicts():
    """The view keeps the observer's document (an ``added`` let through) and, on a diffed
    ``changed`` whose ``before`` is that very dict, takes ``after`` without copying; a
    document the view copied (here: changed by a low-level ``changed()``) is updated as a
    copy, never replaced by ``after``."""
    view = SessionView()
    first = {"title": "a", "year": 1}
    assert view.apply_diffed("A", "added", "books", "1", first) is None
    second = {"title": "b", "year": 1}
    assert view.apply_diffed("A", "changed", "books", "1", {"title": "b"}, None, first, second) is None
    assert view._collections["books"]["1"].fields is second
    assert view.document("books", "1") == {"title": "b", "year": 1}
    assert view.changed("A", "books", "1", {"year": 2}) == [
        {"msg": "changed", "collection": "books", "id": "1", "fields": {"year": 2}}]
    assert second == {"title": "b", "year": 1}  # the observer's dict is never written
    third = {"title": "c", "year": 1}  # the observer's state: it does not know of year 2
    assert view.apply_diffed("A", "changed", "books", "1", {"title": "c"}, None, second, third) is None
    assert view._collections["books"]["1"].fields is not third
    assert view.document("books", "1") == {"title": "c", "year": 2}
