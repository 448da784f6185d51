"""SockJS over HTTP without a server: the framing of each transport (property-based) and
the session's state machine (receivers attaching and detaching, 2010, timeout, close),
driven on gevent in this process."""
import json
import re
import urllib.parse

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.server import sockjs
from ddpctl.server.sockjs_session import Receiver, SessionRegistry, SockJSSession
from ddpctl.server.websocket import ConnectionClosed

TEXTS = st.lists(st.text(), max_size=5)
FRAMES = st.one_of(st.just("o"), st.just("h"), TEXTS.map(sockjs.http_messages_frame),
                   st.builds(sockjs.close_frame, st.integers(1000, 4999), st.text()))
UNSAFE = re.compile("[\u2028\u2029\u200c-\u200f\u2060-\u206f\ufff0-\uffff\ud800-\udfff]")

# -- framing ----------------------------------------------------------------------------


@given(TEXTS)
def test_message_frames_round_trip_and_carry_no_character_a_browser_mangles(texts):
    frame = sockjs.http_messages_frame(texts)
    assert frame.startswith("a") and json.loads(frame[1:]) == texts
    assert UNSAFE.search(frame) is None and "\n" not in frame


@given(FRAMES)
def test_xhr_lines(frame):
    chunk = sockjs.xhr_chunk(frame)
    assert chunk.endswith(b"\n") and chunk.count(b"\n") == 1
    assert chunk[:-1].decode() == frame


@given(FRAMES)
def test_eventsource_events_unescape_to_the_frame(frame):
    chunk = sockjs.eventsource_chunk(frame)
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\r\n\r\n")
    data = chunk[6:-4]
    assert not set(data) & {0, ord("\r"), ord("\n")}
    assert urllib.parse.unquote(data.decode()) == frame


@given(FRAMES)
def test_htmlfile_scripts_cannot_be_closed_early(frame):
    chunk = sockjs.htmlfile_chunk(frame)
    assert chunk.startswith(b"<script>\np(") and chunk.endswith(b");\n</script>\r\n")
    literal = chunk[len(b"<script>\np("):-len(b");\n</script>\r\n")]
    assert b"<" not in literal and chunk.isascii()
    assert json.loads(literal) == frame


@given(FRAMES, st.from_regex(r"[a-zA-Z0-9_.-]{1,32}", fullmatch=True))
def test_jsonp_calls(frame, callback):
    assert sockjs.valid_callback(callback)
    chunk = sockjs.jsonp_chunk(callback, frame)
    prefix = f"/**/{callback}(".encode()
    assert chunk.startswith(prefix) and chunk.endswith(b");\r\n") and chunk.isascii()
    assert json.loads(chunk[len(prefix):-4]) == frame


@given(st.text())
def test_only_plain_callback_names_are_accepted(name):
    assert sockjs.valid_callback(name) == bool(re.fullmatch(r"[a-zA-Z0-9_.-]{1,32}", name))


def test_htmlfile_prelude_is_past_1_kib_and_calls_the_parents_callback():
    prelude = sockjs.htmlfile_prelude("_jp.abc")
    assert len(prelude) >= 1024 and prelude.endswith(b"\r\n\r\n")
    assert b"parent._jp.abc" in prelude


@given(st.lists(st.text(), max_size=5), st.sampled_from(["", "text/plain", "application/json",
                                                        "text/plain;charset=UTF-8", "T"]))
def test_send_bodies_decode_to_their_messages(texts, content_type):
    body = json.dumps(texts).encode()
    assert sockjs.decode_send_body(body, content_type) == texts
    form = urllib.parse.urlencode({"d": json.dumps(texts)}).encode()
    assert sockjs.decode_jsonp_send_body(form, "application/x-www-form-urlencoded") == texts
    assert sockjs.decode_jsonp_send_body(body, "text/plain") == texts
    assert sockjs.decode_jsonp_send_body(json.dumps(json.dumps(texts)).encode(), "") == texts


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.integers())))
def test_a_send_body_that_is_not_an_array_is_no_payload(value):
    with pytest.raises(sockjs.PayloadError, match="Payload expected."):
        sockjs.decode_send_body(json.dumps(value).encode(), "text/plain")


@given(st.binary())
def test_any_send_body_is_messages_or_a_payload_error(body):
    try:
        messages = sockjs.decode_send_body(body, "")
    except sockjs.PayloadError as exc:
        assert str(exc) in ("Payload expected.", "Broken JSON encoding.")
    else:
        assert all(isinstance(m, str) for m in messages)


def test_send_body_limits_apply_to_each_message():
    body = json.dumps(["x" * 10, "y" * 11]).encode()
    with pytest.raises(sockjs.MessageTooBig):
        sockjs.decode_send_body(body, "", max_message_size=10)
    assert sockjs.decode_send_body(body, "", max_message_size=11) == ["x" * 10, "y" * 11]
    with pytest.raises(sockjs.PayloadError, match="Payload expected."):
        sockjs.decode_send_body(body, "multipart/form-data")


# -- the session ------------------------------------------------------------------------

def new_session(delay=5.0, queue_bytes=1 << 20):
    registry = SessionRegistry()
    return registry, SockJSSession(registry, "s1", "xhr-polling", delay, queue_bytes)


def test_first_receiver_gets_open_then_frames_in_order_and_a_second_gets_nothing():
    registry, session = new_session()
    poll = Receiver(1)
    assert session.attach(poll)
    assert not session.attach(Receiver(1))  # 2010 for that one
    assert session.next_frame(poll) == "o"
    session.frame_written(poll, 2)
    session.detach(poll, aborted=False)
    sent = []
    writer = gevent.spawn(lambda: [session.send([str(i)]) or sent.append(i) for i in range(3)])
    gevent.sleep(0.01)
    assert sent == []  # no receiver: the writer waits (its bytes stay counted by the connection)
    frames = []
    for _ in range(3):
        poll = Receiver(1)
        assert session.attach(poll)
        frame = session.next_frame(poll)
        frames.append(frame)
        session.frame_written(poll, len(frame))
        session.detach(poll, aborted=False)
        gevent.sleep(0)
    writer.join(1)
    assert frames == ['a["0"]', 'a["1"]', 'a["2"]'] and sent == [0, 1, 2]
    assert registry.get("s1") is session


def test_no_receiver_for_the_disconnect_delay_closes_the_session():
    registry, session = new_session(delay=0.05)
    reader = gevent.spawn(session.receive)
    gevent.sleep(0.2)
    assert reader.dead and isinstance(reader.exception, ConnectionClosed)
    assert registry.get("s1") is None and session.closed and session.state == "closed"


def test_a_receiver_attached_keeps_the_session_and_an_aborted_one_ends_it():
    registry, session = new_session(delay=0.05)
    stream = Receiver(1 << 20)
    assert session.attach(stream)
    gevent.sleep(0.2)
    assert registry.get("s1") is session
    session.detach(stream, aborted=True)
    assert registry.get("s1") is None


def test_close_frame_goes_to_every_receiver_until_the_session_expires():
    registry, session = new_session(delay=0.2)
    stream = Receiver(1 << 20)
    assert session.attach(stream)
    assert session.next_frame(stream) == "o"
    session.close(3000, "Go away!")
    with pytest.raises(ConnectionClosed):
        session.receive()  # the connection's reader sees it closed
    assert registry.closing() == 1  # shutdown waits for this one
    assert session.next_frame(stream) == 'c[3000,"Go away!"]'
    session.frame_written(stream, 20)
    assert registry.closing() == 0
    assert session.next_frame(stream) is None  # the response ends after it
    session.detach(stream, aborted=False)
    for _ in range(2):
        again = Receiver(1)
        assert session.attach(again) and session.next_frame(again) == 'c[3000,"Go away!"]'
        session.detach(again, aborted=False)
    assert registry.get("s1") is session
    gevent.sleep(0.4)
    assert registry.get("s1") is None


def test_send_requests_wait_while_the_reader_is_behind():
    registry, session = new_session(queue_bytes=10)
    session.deliver(["a" * 20], 22)
    second = gevent.spawn(session.deliver, ["b"], 5)
    gevent.sleep(0.01)
    assert not second.dead  # over receive_queue_bytes: the request waits
    assert session.receive() == ["a" * 20]
    second.join(1)
    assert second.dead and session.receive() == ["b"]


def test_heartbeat_only_to_an_attached_receiver():
    registry, session = new_session()
    session.send_heartbeat()  # nobody to send it to: returns at once
    stream = Receiver(1 << 20)
    assert session.attach(stream) and session.next_frame(stream) == "o"
    beat = gevent.spawn(session.send_heartbeat)
    gevent.sleep(0)
    assert session.next_frame(stream) == "h"
    session.frame_written(stream, 2)
    beat.join(1)
    assert beat.successful()


def test_abort_ends_an_open_session_and_wakes_a_waiting_writer():
    registry, session = new_session()
    writer = gevent.spawn(session.send, ["x"])
    gevent.sleep(0.01)
    session.abort()
    writer.join(1)
    assert isinstance(writer.exception, ConnectionClosed) and registry.get("s1") is None


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 12), heartbeats=st.sets(st.integers(0, 12)),
       episodes=st.lists(st.tuples(st.sampled_from(["poll", "stream"]), st.integers(1, 4)), max_size=20))
def test_any_churn_of_receivers_delivers_every_message_once_in_order(count, heartbeats, episodes):
    """Whatever receivers come and go (polls, streams cut after a few frames, gaps with
    none attached), the client reads ``o`` first, then every message once, in order."""
    registry, session = new_session()

    def writer():
        for i in range(count):
            if i in heartbeats:
                session.send_heartbeat()
            session.send([str(i)])

    writing = gevent.spawn(writer)
    frames = []

    def episode(kind, frames_wanted):
        receiver = Receiver(1 if kind == "poll" else 1 << 20)
        assert session.attach(receiver)
        try:
            for _ in range(1 if kind == "poll" else frames_wanted):
                frame = gevent.with_timeout(0.005, session.next_frame, receiver, timeout_value=None)
                if frame is None:
                    break
                frames.append(frame)
                session.frame_written(receiver, len(frame))
        finally:
            session.detach(receiver, aborted=False)
        gevent.sleep(0)

    for kind, wanted in episodes:
        episode(kind, wanted)
    for _ in range(4 * count + 2):  # then a client that keeps polling gets the rest
        episode("poll", 1)
    writing.join(1)
    assert writing.successful()
    assert frames[0] == "o"
    data = [json.loads(frame[1:]) for frame in frames[1:] if frame != "h"]
    assert data == [[str(i)] for i in range(count)]
    assert set(frames[1:]) - {"h"} == {f'a["{i}"]' for i in range(count)}
