"""An observer's batch reaches a connection in one call (``Subscription.send_all``) and
leaves it in one write, and what the client ends up with is exactly what Meteor's
precedence-list mergebox gives, whether the connection's subscriptions overlap or not, and
whether or not the session shares the observer's documents (``PreparedMessage.before`` /
``after``)."""
import json
from types import SimpleNamespace

import gevent
import test_connection_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.config import ServeConfig
from ddpctl.ddp.ejson import equals
from ddpctl.ddp.mergebox import SessionView
from ddpctl.livedata.observer import diff_fields
from ddpctl.livedata.publish import PreparedMessage, Subscription
from ddpctl.server.connection import DDPConnection

DOCS = ("1", "2", "3")
VALUES = st.sampled_from([1, 1.0, 2, "x", None, [1], {"k": 1}])
FIELDS = st.dictionaries(st.sampled_from(("title", "pages", "tags")), VALUES, max_size=3)
# A batch: for some documents of one observer ("a" or "b"), the new state (None: gone).
BATCH = st.tuples(st.sampled_from("ab"), st.dictionaries(st.sampled_from(DOCS), st.none() | FIELDS,
                                                         min_size=1, max_size=3))


class RecordingTransport(test_connection_writer.RecordingTransport):
    """The writer tests' client, which also takes direct (non-blocking) writes whole."""

    def send_nowait(self, texts: list[str]) -> int:
        self.send(texts)
        return 0


def _connection(sub_ids):
    server = SimpleNamespace(config=ServeConfig(), connections=set())
    transport = RecordingTransport()
    conn = DDPConnection(server, transport, {})  # type: ignore[arg-type]
    conn.session.id, conn.session.version, conn.handle.id = "s", "1", "s"
    subs = {}
    for sub_id in sub_ids:
        conn.session.subscriptions[sub_id] = "Books"
        subs[sub_id] = conn._subs[sub_id] = Subscription(conn, sub_id, "Books", [])
    return conn, transport, subs


def _apply(client, text):
    msg = json.loads(text)
    key = msg["id"]
    if msg["msg"] == "added":
        assert key not in client
        client[key] = msg.get("fields", {})
    elif msg["msg"] == "changed":
        assert key in client and (msg.get("fields") or msg.get("cleared"))
        client[key].update(msg.get("fields", {}))
        for name in msg.get("cleared", ()):
            del client[key][name]
    else:
        del client[key]


def _same(a, b):
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(equals(a[k][f], b[k][f]) for f in a[k]) for k in a)


@settings(max_examples=300, deadline=None)
@given(st.lists(BATCH, max_size=25), st.booleans(), st.booleans())
def test_a_batch_is_one_write_and_the_client_sees_what_precedence_lists_give(batches, overlap, whole):
    """``overlap``: subscriptions "a" and "b" of one connection publish the same documents
    (else "b" publishes under other ids); ``whole``: messages carry the observer's whole
    documents, as ``Observer.apply`` makes them."""
    conn, transport, subs = _connection("ab")
    reference = SessionView(sole=False)
    expected: dict[str, dict] = {}
    held = {"a": {}, "b": {}}  # each observer's documents (what it sent its subscription)
    for observer, states in batches:
        messages = []
        for doc, after in states.items():
            doc_id = doc if overlap or observer == "a" else f"b{doc}"
            before = held[observer].get(doc_id)
            if after is None and before is None:
                continue
            if after is None:
                del held[observer][doc_id]
                messages.append(PreparedMessage("removed", "books", doc_id))
            elif before is None:
                held[observer][doc_id] = after
                messages.append(PreparedMessage("added", "books", doc_id, after))
            else:
                changed, cleared = diff_fields(before, after)
                held[observer][doc_id] = after
                if changed or cleared:
                    messages.append(PreparedMessage("changed", "books", doc_id, changed, cleared,
                                                    *((before, after) if whole else ())))
        if not messages:
            continue
        out = []
        for m in messages:
            handle = "N" + observer
            if m.op == "added":
                out += reference.added(handle, "books", m.id, m.fields)
            elif m.op == "changed":
                out += reference.changed(handle, "books", m.id, m.fields, m.cleared or ())
            else:
                out += reference.removed(handle, "books", m.id)
        for msg in out:
            _apply(expected, json.dumps(msg))
        writes = len(transport.batches)
        subs[observer].send_all(messages)
        gevent.sleep(0)  # the direct writes
        assert len(transport.batches) == writes + (1 if out else 0)  # one write per batch
    client: dict[str, dict] = {}
    for texts in transport.batches:
        for text in texts:
            _apply(client, text)
    assert _same(client, expected)
    assert _same({d: conn.session.view.document("books", d) for d in client}, expected)
    assert not conn._outbox and not conn._buffered
