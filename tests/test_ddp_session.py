"""The DDP session state machine with plain calls: handshake, validation, replies."""
import json

import pytest

from ddpctl.ddp.errors import MeteorError
from ddpctl.ddp.heartbeat import Beat, Heartbeat
from ddpctl.ddp.messages import stringify
from ddpctl.ddp.session import (
    Close,
    Enqueue,
    MethodCall,
    Send,
    Session,
    SubscriptionStart,
    SubscriptionStop,
)


def make_session():
    return Session(has_method=lambda n: n == "add", has_publication=lambda n: n == "books",
                   session_id_factory=lambda: "S" * 17)


def recv(session, msg):
    return session.receive(json.dumps(msg) if not isinstance(msg, str) else msg)


def connected():
    s = make_session()
    assert recv(s, {"msg": "connect", "version": "1", "support": ["1"]}) == [
        Send({"msg": "connected", "session": "S" * 17})]
    return s


def process(session, msg):
    [item] = recv(session, msg)
    assert isinstance(item, Enqueue)
    return session.process(item.message)


@pytest.mark.parametrize("msg, version", [
    ({"msg": "connect", "support": ["1"]}, "1"),
    ({"msg": "connect", "version": "1"}, "1"),
    ({"msg": "connect", "version": "_", "support": ["_"]}, "1"),
    ({"msg": "connect", "version": "pre1", "support": ["1", "pre1"]}, "1"),
    ({"msg": "connect", "version": "2", "support": ["2", "pre2"]}, "pre2"),
    ({"msg": "connect", "version": "1", "support": ["1", 7]}, "1"),
])
def test_failed_version_negotiation_then_close_and_ignore(msg, version):
    s = make_session()
    out = recv(s, msg)
    assert out[0] == Send({"msg": "failed", "version": version})
    assert isinstance(out[1], Close)
    assert recv(s, {"msg": "ping"}) == []


@pytest.mark.parametrize("version", ["1", "pre2", "pre1"])
def test_each_supported_version_connects(version):
    s = make_session()
    out = recv(s, {"msg": "connect", "version": version, "support": [version]})
    assert out[0].message["msg"] == "connected"
    assert s.version == version


def test_session_field_is_ignored_and_id_is_17_chars():
    s = Session(has_method=bool, has_publication=bool)
    [out] = recv(s, {"msg": "connect", "version": "1", "support": ["1"], "session": "old"})
    assert len(out.message["session"]) == 17 and out.message["session"] != "old"


@pytest.mark.parametrize("text, reply", [
    ("not json", {"msg": "error", "reason": "Bad request"}),
    ("[1,2]", {"msg": "error", "reason": "Bad request"}),
    ('{"foo":"bar"}', {"msg": "error", "reason": "Bad request", "offendingMessage": {"foo": "bar"}}),
    ('{"msg":"method","params":[{"$type":"zz","$value":1}]}', {"msg": "error", "reason": "Parse error"}),
])
def test_bad_frames(text, reply):
    assert recv(make_session(), text) == [Send(reply)]


@pytest.mark.parametrize("msg", [
    {"msg": "ping"}, {"msg": "ping", "id": "x"}, {"msg": "method", "method": "add", "id": "1"},
    {"msg": "sub", "id": "1", "name": "books"}, {"msg": "unsub", "id": "1"},
])
def test_must_connect_first(msg):
    assert recv(make_session(), msg) == [
        Send({"msg": "error", "reason": "Must connect first", "offendingMessage": msg})]


def test_already_connected():
    s = connected()
    msg = {"msg": "connect", "version": "1", "support": ["1"]}
    assert recv(s, msg) == [Send({"msg": "error", "reason": "Already connected", "offendingMessage": msg})]


def test_ping_pong():
    s = connected()
    assert recv(s, {"msg": "ping"}) == [Send({"msg": "pong"})]
    assert recv(s, {"msg": "ping", "id": "abc"}) == [Send({"msg": "pong", "id": "abc"})]
    assert recv(s, {"msg": "pong"}) == []


def test_pre1_has_no_ping():
    s = make_session()
    recv(s, {"msg": "connect", "version": "pre1", "support": ["pre1"]})
    [item] = recv(s, {"msg": "ping"})
    assert s.process(item.message).messages == [
        {"msg": "error", "reason": "Bad request", "offendingMessage": {"msg": "ping"}}]
    assert not s.heartbeats


def test_unknown_message_after_connect():
    s = connected()
    out = process(s, {"msg": "frobnicate"})
    assert out.messages == [{"msg": "error", "reason": "Bad request",
                             "offendingMessage": {"msg": "frobnicate"}}]


@pytest.mark.parametrize("msg", [
    {"msg": "method", "id": "1"},
    {"msg": "method", "method": "add"},
    {"msg": "method", "method": "add", "id": 1},
    {"msg": "method", "method": "add", "id": "1", "params": {}},
    {"msg": "method", "method": "add", "id": "1", "randomSeed": 5},
])
def test_malformed_method(msg):
    out = process(connected(), msg)
    assert out.messages == [{"msg": "error", "reason": "Malformed method invocation",
                             "offendingMessage": msg}]
    assert out.work is None


@pytest.mark.parametrize("msg", [
    {"msg": "sub", "name": "books"},
    {"msg": "sub", "id": "1"},
    {"msg": "sub", "id": "1", "name": "books", "params": "x"},
])
def test_malformed_subscription(msg):
    out = process(connected(), msg)
    assert out.messages == [{"msg": "error", "reason": "Malformed subscription", "offendingMessage": msg}]


def test_unknown_method_is_404_result_then_updated():
    out = process(connected(), {"msg": "method", "method": "nope", "id": "7"})
    assert [m["msg"] for m in out.messages] == ["result", "updated"]
    assert out.messages[0]["error"] == {
        "isClientSafe": True, "error": 404, "reason": "Method 'nope' not found",
        "message": "Method 'nope' not found [404]", "errorType": "Meteor.Error"}
    assert out.messages[1] == {"msg": "updated", "methods": ["7"]}


def test_known_method_updated_then_result():
    s = connected()
    out = process(s, {"msg": "method", "method": "add", "id": "1", "params": [1, 2], "randomSeed": "abc"})
    assert out.work == MethodCall("1", "add", [1, 2], "abc")
    assert s.method_returned(out.work, 3) == [
        {"msg": "updated", "methods": ["1"]}, {"msg": "result", "id": "1", "result": 3}]
    assert s.method_returned(out.work, None)[1] == {"msg": "result", "id": "1"}
    error = MeteorError("not-allowed", "No", {"x": 1})
    assert s.method_failed(out.work, error)[1]["error"] == {
        "isClientSafe": True, "error": "not-allowed", "reason": "No", "details": {"x": 1},
        "message": "No [not-allowed]", "errorType": "Meteor.Error"}


def test_unknown_publication_is_nosub_404():
    out = process(connected(), {"msg": "sub", "id": "s1", "name": "nope"})
    assert out.messages == [{"msg": "nosub", "id": "s1", "error": {
        "isClientSafe": True, "error": 404, "reason": "Subscription 'nope' not found",
        "message": "Subscription 'nope' not found [404]", "errorType": "Meteor.Error"}}]


def test_subscription_lifecycle():
    s = connected()
    out = process(s, {"msg": "sub", "id": "s1", "name": "books", "params": [1]})
    assert out.work == SubscriptionStart("s1", "books", [1])
    assert process(s, {"msg": "sub", "id": "s1", "name": "books"}).work is None  # duplicate id
    assert s.subscription_added("s1", "b", "1", {"t": "x"}) == [
        {"msg": "added", "collection": "b", "id": "1", "fields": {"t": "x"}}]
    assert s.subscription_ready("s1") == [{"msg": "ready", "subs": ["s1"]}]
    assert s.subscription_ready("s1") == []
    out = process(s, {"msg": "unsub", "id": "s1"})
    assert out.messages == [{"msg": "removed", "collection": "b", "id": "1"}, {"msg": "nosub", "id": "s1"}]
    assert out.work == SubscriptionStop("s1")
    assert s.subscription_added("s1", "b", "2", {}) == []  # late data of a stopped sub is dropped


def test_unsub_always_answers_nosub():
    s = connected()
    assert process(s, {"msg": "unsub", "id": "never"}).messages == [{"msg": "nosub", "id": "never"}]
    assert process(s, {"msg": "unsub"}).messages == [{"msg": "nosub"}]


def test_subscription_error_withdraws_documents():
    s = connected()
    process(s, {"msg": "sub", "id": "s1", "name": "books"})
    s.subscription_added("s1", "b", "1", {})
    out = s.subscription_failed("s1", MeteorError(500, "Internal server error"))
    assert out[0] == {"msg": "removed", "collection": "b", "id": "1"}
    assert out[1]["msg"] == "nosub" and out[1]["error"]["error"] == 500


def test_stringify_applies_ejson_only_to_ejson_fields():
    text = stringify({"msg": "result", "id": "1", "result": {"$date": 1}})
    assert json.loads(text) == {"msg": "result", "id": "1", "result": {"$escape": {"$date": 1}}}


def test_heartbeat_pings_when_idle_and_times_out():
    hb = Heartbeat(15, 15, now=0)
    assert hb.tick(10) is Beat.NOTHING
    assert hb.tick(15) is Beat.PING
    assert hb.tick(29) is Beat.NOTHING
    assert hb.tick(30) is Beat.TIMEOUT


def test_heartbeat_any_message_counts_as_pong():
    hb = Heartbeat(15, 15, now=0)
    assert hb.tick(15) is Beat.PING
    hb.message_received()
    assert hb.tick(30) is Beat.NOTHING  # traffic since the last tick: no ping this time
    assert hb.tick(45) is Beat.PING


def test_heartbeat_disabled_with_zero_interval():
    hb = Heartbeat(0, 15)
    assert hb.tick(1000) is Beat.NOTHING


# -- no frame breaks a session --------------------------------------------------------------

import logging  # noqa: E402

from ejson_strategies import frames  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ddpctl.ddp.ejson import JSDate, to_json_value  # noqa: E402
from ddpctl.ddp.messages import parse  # noqa: E402


def echo_session():
    return Session(has_method=lambda n: n == "echo", has_publication=lambda n: n != "nope",
                   session_id_factory=lambda: "S" * 17)


@given(st.lists(st.one_of(frames, st.binary(max_size=40)), min_size=1, max_size=5), st.booleans())
def test_no_frame_raises_and_every_reply_encodes(frame_list, connect_first):
    s = echo_session()
    if connect_first:
        recv(s, {"msg": "connect", "version": "1", "support": ["1"]})
    for frame in frame_list:
        for item in s.receive(frame):
            if isinstance(item, Send):
                stringify(item.message).encode("utf-8")
            elif isinstance(item, Enqueue):
                processed = s.process(item.message)
                for msg in processed.messages:
                    stringify(msg).encode("utf-8")
                if isinstance(processed.work, MethodCall):  # echo: the params come back unchanged
                    call = processed.work
                    for msg in s.method_returned(call, call.params):
                        text = stringify(msg)
                    assert to_json_value(parse(text)["result"]) == to_json_value(call.params)
    answer = recv(s, {"msg": "ping", "id": "alive"})
    if s.failed:  # a connect that failed negotiation: Meteor ignores what follows
        assert answer == []
    elif s.connected:
        assert answer == [Send({"msg": "pong", "id": "alive"})]
    else:
        assert answer[0].message["reason"] == "Must connect first"


def test_year_10000_date_is_a_method_param_that_echoes_back():
    s = echo_session()
    recv(s, {"msg": "connect", "version": "1", "support": ["1"]})
    frame = '{"msg":"method","method":"echo","id":"1","params":[{"$date":253402300800000}]}'
    [item] = s.receive(frame)
    call = s.process(item.message).work
    assert call.params == [JSDate(253402300800000)]
    assert json.loads(stringify(s.method_returned(call, call.params)[1]))["result"] == [
        {"$date": 253402300800000}]


@pytest.mark.parametrize("msg", [{"msg": "ping", "id": 5}, {"msg": "ping", "id": 1e400},
                                 {"msg": "ping", "id": {"a": [1]}}])
def test_ping_with_an_id_that_is_not_a_string_is_ignored_like_meteor(msg):
    s = connected()
    assert recv(s, json.dumps(msg, allow_nan=True).replace("Infinity", "1e400")) == []
    assert recv(s, {"msg": "ping"}) == [Send({"msg": "pong"})]


def test_unsub_with_an_id_that_is_not_a_string_is_ignored_like_meteor():
    s = connected()
    assert process(s, {"msg": "unsub", "id": 7}).messages == []


def test_offending_message_is_sent_as_the_client_wrote_it():
    s = connected()
    [reply] = process(s, '{"msg":"method","id":3,"params":[{"$date":5},{"$escape":{"$date":1}}]}').messages
    assert json.loads(stringify(reply)) == json.loads(
        '{"msg":"error","reason":"Malformed method invocation","offendingMessage":'
        '{"msg":"method","id":3,"params":[{"$date":5},{"$escape":{"$date":1}}]}}')


def test_subscription_cap_gets_nosub_429_and_frees_up_on_unsub():
    s = Session(has_method=lambda n: False, has_publication=lambda n: True, max_subscriptions=2)
    recv(s, {"msg": "connect", "version": "1", "support": ["1"]})
    assert isinstance(process(s, {"msg": "sub", "id": "a", "name": "p"}).work, SubscriptionStart)
    assert isinstance(process(s, {"msg": "sub", "id": "b", "name": "p"}).work, SubscriptionStart)
    assert process(s, {"msg": "sub", "id": "a", "name": "p"}).messages == []  # a resend is fine
    refused = process(s, {"msg": "sub", "id": "c", "name": "p"})
    assert refused.work is None
    [nosub] = refused.messages
    assert nosub["msg"] == "nosub" and nosub["id"] == "c" and nosub["error"]["error"] == 429
    assert "c" not in s.subscriptions
    process(s, {"msg": "unsub", "id": "a"})
    assert isinstance(process(s, {"msg": "sub", "id": "c", "name": "p"}).work, SubscriptionStart)


@pytest.mark.parametrize("param, accepted", [("x" * 90, True), ("x" * 100, False), ("é" * 50, False)])
def test_params_size_cap_gets_nosub_413(param, accepted):
    s = Session(has_method=lambda n: False, has_publication=lambda n: True, max_params_size=100)
    recv(s, {"msg": "connect", "version": "1", "support": ["1"]})
    out = process(s, {"msg": "sub", "id": "a", "name": "p", "params": [param]})
    if accepted:
        assert isinstance(out.work, SubscriptionStart)
    else:
        assert out.work is None and out.messages[0]["error"]["error"] == 413


def test_a_bad_frame_costs_one_warning_line_without_traceback(caplog):
    s = connected()
    with caplog.at_level(logging.INFO, logger="ddpctl.ddp.session"):
        recv(s, '{"msg":"method","params":[{"$type":"nope","$value":1}]}')
        recv(s, "not json")
        recv(s, {"no": "msg"})
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    assert all(r.exc_info is None for r in caplog.records)
    assert "Parse error" in caplog.records[0].getMessage()


def test_universal_subscriptions_send_documents_but_no_ready_or_nosub_and_clients_cannot_touch_them():
    s = connected()
    start = s.start_universal("users")
    assert isinstance(start, SubscriptionStart) and start.name == "users" and start.params == []
    assert s.subscription_added(start.id, "users", "1", {"username": "ada"}) == [
        {"msg": "added", "collection": "users", "id": "1", "fields": {"username": "ada"}}]
    assert s.subscription_ready(start.id) == []
    # A client sub or unsub with the same id neither replaces nor stops it.
    assert process(s, {"msg": "sub", "id": start.id, "name": "books"}).work is None
    out = process(s, {"msg": "unsub", "id": start.id})
    assert out.work is None and out.messages == [{"msg": "nosub", "id": start.id}]
    assert s.view.document("users", "1") == {"username": "ada"}
    # It does not count against the subscription cap.
    s.max_subscriptions = 1
    assert isinstance(process(s, {"msg": "sub", "id": "a", "name": "books"}).work, SubscriptionStart)
    # When it fails: its documents go, with no nosub.
    assert s.subscription_failed(start.id, MeteorError(500, "x")) == [
        {"msg": "removed", "collection": "users", "id": "1"}]
    again = s.start_universal("users")
    assert again.id != start.id
    assert s.subscription_stopped(again.id) == []
