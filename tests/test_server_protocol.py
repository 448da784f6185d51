"""DDP over a real WebSocket (raw and SockJS) against a live ``ddpctl serve``.

Includes the 19 handshake and validation cases of meteorhacks/ddptest
(reference/ddp-protocol.md section 3).
"""
import json

import pytest
import websocket

from ddpctl.api import MeteorError
from ddpctl.ddp.random import random_stream
from ddpctl.testing import DDPClient


def connect_msg(**extra):
    return {"msg": "connect", "version": "1", "support": ["1"], **extra}


# -- meteorhacks/ddptest ----------------------------------------------------------------

def test_ddptest_01_message_without_msg_is_bad_request(client):
    client.send({"foo": "bar"})
    assert client.recv() == {"msg": "error", "reason": "Bad request", "offendingMessage": {"foo": "bar"}}


def test_ddptest_02_connect_without_version_fails(client):
    client.send({"msg": "connect", "support": ["1"]})
    assert client.recv() == {"msg": "failed", "version": "1"}


def test_ddptest_03_connect_without_support_fails(client):
    client.send({"msg": "connect", "version": "1"})
    assert client.recv() == {"msg": "failed", "version": "1"}


def test_ddptest_04_connect(client):
    client.send(connect_msg())
    reply = client.recv()
    assert reply["msg"] == "connected" and isinstance(reply["session"], str) and len(reply["session"]) == 17


def test_ddptest_05_connect_with_session_gets_a_new_session(client):
    client.send(connect_msg(session="sessionIdFromBefore"))
    reply = client.recv()
    assert reply["msg"] == "connected" and len(reply["session"]) == 17
    assert reply["session"] != "sessionIdFromBefore"


def test_ddptest_06_unsupported_version_fails(client):
    client.send({"msg": "connect", "version": "_", "support": ["_"]})
    reply = client.recv()
    assert reply["msg"] == "failed" and isinstance(reply["version"], str)


def test_ddptest_07_unsupported_version_with_session_fails(client):
    client.send({"msg": "connect", "version": "_", "support": ["_"], "session": "x"})
    reply = client.recv()
    assert reply["msg"] == "failed" and isinstance(reply["version"], str)


@pytest.mark.parametrize("ping", [{"msg": "ping"}, {"msg": "ping", "id": "abc"}],
                         ids=["08_without_id", "09_with_id"])
def test_ddptest_08_09_ping_before_connect(client, ping):
    client.send(ping)
    assert client.recv() == {"msg": "error", "reason": "Must connect first", "offendingMessage": ping}


def test_ddptest_10_ping(client):
    client.connect()
    client.send({"msg": "ping"})
    assert client.recv() == {"msg": "pong"}


def test_ddptest_11_ping_with_id(client):
    client.connect()
    client.send({"msg": "ping", "id": "abc"})
    assert client.recv() == {"msg": "pong", "id": "abc"}


def test_ddptest_12_method_before_connect(client):
    msg = {"msg": "method", "method": "echo", "params": [], "id": "1"}
    client.send(msg)
    assert client.recv() == {"msg": "error", "reason": "Must connect first", "offendingMessage": msg}


@pytest.mark.parametrize("msg", [
    {"msg": "method", "params": [], "id": "1"},
    {"msg": "method", "method": "echo", "params": []},
], ids=["13_without_method", "14_without_id"])
def test_ddptest_13_14_malformed_method(client, msg):
    client.connect()
    client.send(msg)
    assert client.recv() == {"msg": "error", "reason": "Malformed method invocation", "offendingMessage": msg}


def test_ddptest_15_sub_before_connect(client):
    msg = {"msg": "sub", "id": "s", "name": "numbers"}
    client.send(msg)
    assert client.recv() == {"msg": "error", "reason": "Must connect first", "offendingMessage": msg}


@pytest.mark.parametrize("msg", [
    {"msg": "sub", "name": "numbers", "params": []},
    {"msg": "sub", "id": "s", "params": []},
], ids=["16_without_id", "17_without_name"])
def test_ddptest_16_17_malformed_subscription(client, msg):
    client.connect()
    client.send(msg)
    assert client.recv() == {"msg": "error", "reason": "Malformed subscription", "offendingMessage": msg}


def test_ddptest_18_unsub_before_connect(client):
    client.send({"msg": "unsub", "id": "s"})
    assert client.recv()["reason"] == "Must connect first"


def test_ddptest_19_unsub_without_id_gets_nosub(client):
    client.connect()
    client.send({"msg": "unsub"})
    assert client.recv() == {"msg": "nosub"}


# -- beyond ddptest ---------------------------------------------------------------------

def test_failed_closes_the_connection(client):
    client.send({"msg": "connect", "version": "9", "support": ["9"]})
    assert client.recv() == {"msg": "failed", "version": "1"}
    with pytest.raises((websocket.WebSocketException, ConnectionError)):
        client.recv()


def test_negotiates_pre2(client):
    client.send({"msg": "connect", "version": "2", "support": ["2", "pre2"]})
    assert client.recv() == {"msg": "failed", "version": "pre2"}


def test_invalid_json_and_ejson(client):
    client.connect()
    client.send_raw("{not json")
    assert client.recv() == {"msg": "error", "reason": "Bad request"}
    client.send({"msg": "method", "method": "echo", "id": "1", "params": [{"$type": "nope", "$value": 1}]})
    assert client.recv() == {"msg": "error", "reason": "Parse error"}
    assert client.call("echo", 1) == [1]  # the connection lives on


def test_method_replies_updated_then_result(client):
    client.connect()
    client.send({"msg": "method", "method": "echo", "id": "7", "params": [1, "two", None]})
    assert client.recv() == {"msg": "updated", "methods": ["7"]}
    assert client.recv() == {"msg": "result", "id": "7", "result": [1, "two", None]}


def test_method_returning_none_omits_result(client):
    client.connect()
    client.send({"msg": "method", "method": "books.rename", "id": "1", "params": [10**9, "x"]})
    client.recv()
    reply = client.recv()
    assert reply["error"]["error"] == 404 and reply["error"]["reason"] == "Book not found"


def test_unknown_method_is_404(client):
    client.connect()
    client.send({"msg": "method", "method": "nope", "id": "1", "params": []})
    assert client.recv() == {"msg": "result", "id": "1", "error": {
        "isClientSafe": True, "error": 404, "reason": "Method 'nope' not found",
        "message": "Method 'nope' not found [404]", "errorType": "Meteor.Error"}}
    assert client.recv() == {"msg": "updated", "methods": ["1"]}


def test_meteor_error_reaches_the_client_as_raised(client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.call("meteor_error")
    error = info.value
    assert (error.error, error.reason, error.details) == ("not-allowed", "You may not", {"why": "test"})


def test_exception_in_method_is_500_and_logged(server, client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.call("crash")
    assert (info.value.error, info.value.reason) == (500, "Internal server error")
    assert "ZeroDivisionError: deliberate failure in a test method" in server.output()
    assert "Traceback" in server.output()


def test_result_that_is_not_ejson_is_500(client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.call("not_ejson")
    assert info.value.error == 500


def test_wrong_arity_is_400(client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.call("books.count", 1, 2)
    assert (info.value.error, info.value.reason) == (400, "Match failed")


def test_ejson_params_round_trip(client):
    import datetime
    client.connect()
    value = [datetime.datetime(2020, 5, 17, 12, 0, tzinfo=datetime.UTC), b"\x00\xff", {"$date": 1}]
    assert client.call("echo", *value) == value


def test_random_seed_stream_matches_meteor(client):
    client.connect()
    expected = random_stream("abc", "/collection/tasks").id()
    assert client.call("insert_id", "tasks", random_seed="abc") == expected


def test_method_sees_its_connection(client):
    session = client.connect()
    assert client.call("whoami") == {"session": session, "address": "127.0.0.1"}


def test_writes_of_a_failing_method_are_rolled_back(client):
    client.connect()
    before = client.call("books.count")
    with pytest.raises(MeteorError):
        client.call("add_then_fail", "Never Written")
    assert client.call("books.count") == before


def test_publication_added_then_ready_and_unsub_removes(client):
    client.connect()
    sub = client.subscribe("numbers", 2)
    assert client.collections["numbers"] == {"0": {"value": 0}, "1": {"value": 1}}
    client.send({"msg": "unsub", "id": sub})
    msgs = [client.recv() for _ in range(3)]
    assert msgs[-1] == {"msg": "nosub", "id": sub}
    assert client.collections["numbers"] == {}


def test_duplicate_sub_id_is_ignored(client):
    client.connect()
    sub = client.subscribe("numbers", 1)
    client.send({"msg": "sub", "id": sub, "name": "numbers", "params": [1]})
    client.send({"msg": "ping", "id": "after"})
    assert client.recv() == {"msg": "pong", "id": "after"}


def test_unknown_publication_is_nosub_404(client):
    client.connect()
    client.send({"msg": "sub", "id": "s1", "name": "nope", "params": []})
    reply = client.recv()
    assert reply["msg"] == "nosub" and reply["id"] == "s1"
    assert reply["error"]["error"] == 404 and reply["error"]["reason"] == "Subscription 'nope' not found"


def test_publication_exception_is_nosub_500(server, client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.subscribe("failing")
    assert info.value.error == 500
    assert client.collections["numbers"] == {}  # its document was withdrawn first
    assert "deliberate failure in a test publication" in server.output()


def test_ping_is_answered_while_a_method_runs(client):
    client.connect()
    client.send({"msg": "method", "method": "sleep", "id": "slow", "params": [1.0]})
    client.send({"msg": "ping", "id": "p"})
    assert client.recv() == {"msg": "pong", "id": "p"}
    assert client.recv() == {"msg": "updated", "methods": ["slow"]}


def test_messages_are_processed_in_order(client):
    client.connect()
    for i in range(20):
        client.send({"msg": "method", "method": "echo", "id": str(i), "params": [i]})
    results = [m for m in (client.recv() for _ in range(40)) if m["msg"] == "result"]
    assert [m["result"] for m in results] == [[i] for i in range(20)]


def test_sockjs_batch_and_single_string_frames(server):
    with DDPClient(server.sockjs_url) as client:
        client.ws.send(json.dumps(json.dumps({"msg": "connect", "version": "1", "support": ["1"]})))
        assert client.recv()["msg"] == "connected"
        pings = [json.dumps({"msg": "ping", "id": "a"}), json.dumps({"msg": "ping", "id": "b"})]
        client.ws.send(json.dumps(pings))
        assert [client.recv()["id"], client.recv()["id"]] == ["a", "b"]


def test_sockjs_broken_framing_closes_with_3000(server):
    with DDPClient(server.sockjs_url) as client:
        client.ws.send("{broken")
        assert client.ws.recv() == 'c[3000,"Broken framing."]'


@pytest.mark.parametrize("frame", ["5", "[5]", "[null]", "[true]", '{"a":1}', '[["x"]]', "[{}]", "[[]]",
                                   "[1.5]"])
def test_sockjs_non_string_messages_get_meteors_reply_and_the_connection_lives(server, frame):
    """sockjs-node hands each non-string message to Meteor's DDP parser as String(message),
    which discards it as not a DDP object: "Bad request"."""
    with DDPClient(server.sockjs_url) as client:
        client.connect()
        client.ws.send(frame)
        reply = client.recv()
        assert reply["msg"] == "error" and reply["reason"] == "Bad request"
        client.send({"msg": "ping", "id": "still"})
        assert client.recv() == {"msg": "pong", "id": "still"}


def test_a_flood_of_bad_messages_in_one_sockjs_frame_is_logged_briefly_and_others_are_served(start_server):
    from ddpctl.ddp.session import BAD_FRAMES_LOGGED

    live = start_server()
    with DDPClient(live.sockjs_url) as flooder, DDPClient(live.ws_url) as other:
        flooder.connect()
        other.connect()
        flooder.ws.send(json.dumps([""] * 20_000))  # 20,000 bad messages in one frame
        other.send({"msg": "ping", "id": "during"})
        assert other.recv() == {"msg": "pong", "id": "during"}
        flooder.send({"msg": "ping", "id": "after"})
        replies = [flooder.recv() for _ in range(20_001)]
        assert replies[-1] == {"msg": "pong", "id": "after"}
        assert all(r["msg"] == "error" for r in replies[:-1])
    log = live.output()
    assert BAD_FRAMES_LOGGED <= log.count("Bad request") <= BAD_FRAMES_LOGGED + 2
