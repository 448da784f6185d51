"""The connection's writer greenlet: parked without a timer while idle, woken once per burst,
ended by ``tick`` after it idled a while, and spawned again by the next message.  Whatever
the interleaving of messages, yields and ticks, every message queued reaches the transport
once, in order, and an idle connection ends up with no writer."""
import time
from types import SimpleNamespace

import gevent
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.config import ServeConfig
from ddpctl.server import connection as connection_module
from ddpctl.server.connection import DDPConnection


class RecordingTransport:
    """A client that reads everything; records the batches written."""

    closed = False
    kind = "websocket"  # what ``conns ls`` shows
    heartbeats = False  # no transport heartbeat frames (raw WebSocket)

    def __init__(self):
        self.batches = []
        self.sent_at = time.monotonic()

    def open(self):
        pass

    def receive(self):
        raise NotImplementedError

    def send(self, texts):
        self.batches.append(list(texts))
        self.sent_at = time.monotonic()

    def close(self, code, reason):
        self.closed = True

    def abort(self):
        self.closed = True

    def send_heartbeat(self):
        pass


def _connection():
    transport = RecordingTransport()
    conn = DDPConnection(SimpleNamespace(config=ServeConfig(), connections=set()), transport, {})
    return conn, transport


# Steps: ("push", n) queues n messages from another greenlet's point of view (fan-out),
# ("yield",) lets the hub run (writers write), ("tick", seconds) calls tick() that long
# after the writer parked.
STEPS = st.lists(st.one_of(st.tuples(st.just("push"), st.integers(1, 5)), st.tuples(st.just("yield")),
                           st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 5.0]))),
                 max_size=30)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_every_message_is_written_once_in_order_across_parking_and_retirement(steps):
    conn, transport = _connection()
    sent = []
    for step in steps:
        if step[0] == "push":
            for _ in range(step[1]):
                text = f'{{"msg":"changed","n":{len(sent)}}}'
                sent.append(text)
                conn._queue_text(text)
        elif step[0] == "yield":
            gevent.sleep(0)
        else:
            conn.tick(conn._parked_at + step[1] if conn._parked is not None else time.monotonic())
    for _ in range(5):
        gevent.sleep(0)
    written = [text for batch in transport.batches for text in batch]
    assert written == sent
    assert conn._buffered == 0
    # Idle now: a tick past the linger ends the writer.
    if conn._writer is not None:
        conn.tick(conn._parked_at + connection_module._WRITER_LINGER)
        gevent.sleep(0)
        gevent.sleep(0)
    assert conn._writer is None


def test_a_burst_is_one_wake_up_and_one_write():
    conn, transport = _connection()
    conn._queue_text("a")
    gevent.sleep(0)  # the writer starts, writes, parks
    assert conn._parked is not None
    for text in ("b", "c", "d"):
        conn._queue_text(text)
    gevent.sleep(0)
    assert transport.batches == [["a"], ["b", "c", "d"]]
