"""No value breaks a connection, and a connection's input is bounded (live ``ddpctl serve``).

The fuzz test drives random and mutated frames over one connection of each transport and
checks after every frame that the connection still answers ``ping``.
"""
import itertools
import json
import threading

import pytest
import websocket
from ejson_strategies import frames, values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.api import MeteorError
from ddpctl.ddp.ejson import to_json_value
from ddpctl.testing import DDPClient

_pings = itertools.count()
_FUZZ = settings(max_examples=200, deadline=None, derandomize=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["raw", "sockjs"])
def fuzz_client(request, server):
    with DDPClient(server.ws_url if request.param == "raw" else server.sockjs_url, timeout=30) as client:
        client.connect()
        yield client


def answers_ping(client):
    """Ping with a fresh id; return the replies that came before the pong."""
    ping_id = f"p{next(_pings)}"
    client.send({"msg": "ping", "id": ping_id})
    before = []
    while True:
        reply = client.recv()
        if reply == {"msg": "pong", "id": ping_id}:
            return before
        before.append(reply)


def send_frame(client, frame):
    """Text as a text frame; bytes (or text with lone surrogates, which UTF-8 cannot carry)
    as a binary frame on the raw transport, JSON-escaped text on SockJS."""
    if not client.sockjs and isinstance(frame, str):
        try:
            frame.encode("utf-8")
        except UnicodeEncodeError:
            frame = frame.encode("utf-8", "surrogatepass")
    if isinstance(frame, bytes):
        if client.sockjs:
            frame = frame.decode("utf-8", "replace")  # SockJS carries text only
        else:
            client.ws.send_binary(frame)
            return
    client.send_raw(frame)


@_FUZZ
@given(frame=st.one_of(frames, st.binary(max_size=64)))
def test_no_frame_breaks_the_connection(server, fuzz_client, frame):
    send_frame(fuzz_client, frame)
    for reply in answers_ping(fuzz_client):
        if reply.get("msg") == "error":  # Meteor's reply to a bad frame
            assert isinstance(reply["reason"], str)
    assert "Traceback" not in server.output()  # a bad frame costs a log line, not a traceback


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_every_meteor_value_round_trips_through_echo(client, value):
    if client.session is None:
        client.connect()
    assert client.call("echo", value) == [value]


@pytest.mark.parametrize("date", [253402300800000, -8_640_000_000_000_000, 8_640_000_000_000_000,
                                  -62135596800001])
def test_dates_python_cannot_hold_echo_unchanged(client, date):
    client.connect()
    client.send_raw(json.dumps({"msg": "method", "method": "echo", "id": "y", "params": [{"$date": date}]}))
    replies = [client.recv(), client.recv()]
    assert {"msg": "result", "id": "y", "result": [{"$date": date}]} in replies
    assert answers_ping(client) == []


@pytest.mark.parametrize("frame, reply", [
    ('{"msg":"method","method":"echo","id":"1","params":[{"$type":"fraction","$value":[1,0]}]}',
     {"msg": "error", "reason": "Parse error"}),
    ('{"msg":"method","method":"echo","id":"1","params":[{"$binary":"%%%"}]}',
     {"msg": "error", "reason": "Parse error"}),
    ('{"msg":"method","method":"echo","id":"1","params":' + "[" * 5000 + "]" * 5000 + "}",
     {"msg": "error", "reason": "Parse error"}),
    ('{"msg":"method","method":"echo","id":"1","params":[NaN]}', {"msg": "error", "reason": "Bad request"}),
    ('{"msg":"method","method":"echo","id":1e400,"params":[1e400]}',
     {"msg": "error", "reason": "Malformed method invocation",
      "offendingMessage": {"msg": "method", "method": "echo", "id": None, "params": [{"$InfNaN": 1}]}}),
    ('{"msg":"bogus","x":"\\ud800"}',
     {"msg": "error", "reason": "Bad request", "offendingMessage": {"msg": "bogus", "x": "\ud800"}}),
])
def test_bad_frames_get_meteors_reply_and_the_connection_lives_on(client, frame, reply):
    client.connect()
    client.send_raw(frame)
    assert client.recv() == reply
    assert client.call("echo", 1) == [1]


def test_a_method_error_that_cannot_be_encoded_is_500_and_the_next_call_works(client):
    client.connect()
    with pytest.raises(MeteorError) as info:
        client.call("error_details_not_ejson")
    assert (info.value.error, info.value.reason) == (500, "Internal server error")
    assert client.call("echo", 2) == [2]


def test_ping_with_an_id_that_is_not_a_string_is_ignored(client):
    client.connect()
    client.send_raw('{"msg":"ping","id":1e400}')
    assert answers_ping(client) == []


def test_subscription_and_params_caps_get_nosub(start_server):
    live = start_server("--max-subscriptions", "3", "--max-params-size", "1024")
    with DDPClient(live.ws_url) as client:
        client.connect()
        for n in range(3):
            client.subscribe("echo_params", n)
        client.send({"msg": "sub", "id": "fourth", "name": "echo_params", "params": []})
        nosub = client.recv()
        assert nosub["msg"] == "nosub" and nosub["id"] == "fourth"
        assert nosub["error"]["error"] == 429 and nosub["error"]["errorType"] == "Meteor.Error"
        client.send({"msg": "unsub", "id": "1"})
        while client.recv() != {"msg": "nosub", "id": "1"}:
            pass
        client.send({"msg": "sub", "id": "big", "name": "echo_params", "params": ["x" * 2000]})
        nosub = client.recv()
        assert nosub["msg"] == "nosub" and nosub["id"] == "big" and nosub["error"]["error"] == 413
        client.subscribe("echo_params", "x" * 900)  # under the cap: accepted
    assert "Traceback" not in live.output()


def test_a_bad_frame_costs_one_log_line(start_server):
    live = start_server()
    with DDPClient(live.ws_url) as client:
        client.connect()
        for _ in range(5):
            client.send_raw('{"msg":"method","method":"echo","id":"1","params":[{"$type":"fraction","$value":0}]}')
            assert client.recv()["reason"] == "Parse error"
        assert answers_ping(client) == []
    output = live.output()
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "Parse error" in line]) == 5


def close_code(ws):
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


def test_frame_size_counts_utf8_bytes_and_closes_with_1009(start_server):
    live = start_server("--max-frame-size", "4096")
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.ws.send(json.dumps({"msg": "method", "method": "echo", "id": "1", "params": ["é" * 2000]},
                                  ensure_ascii=False))  # 4,000 bytes and some
        replies = [client.recv(), client.recv()]
        assert {"msg": "result", "id": "1", "result": ["é" * 2000]} in replies
        client.ws.send(json.dumps({"msg": "method", "method": "echo", "id": "2", "params": ["é" * 2100]},
                                  ensure_ascii=False))  # 2,100 characters, 4,200 bytes
        assert close_code(client.ws) == 1009


def test_sockjs_limit_applies_to_the_message_not_its_escaped_frame(start_server):
    live = start_server("--max-frame-size", "4096")
    with DDPClient(live.sockjs_url) as client:
        client.connect()
        message = json.dumps({"msg": "method", "method": "echo", "id": "1", "params": ["é" * 1900]},
                             ensure_ascii=False)
        client.ws.send(json.dumps([message]))  # each é escaped as \u00e9: an 11 KiB frame
        replies = [client.recv(), client.recv()]
        assert {"msg": "result", "id": "1", "result": ["é" * 1900]} in replies
        message = json.dumps({"msg": "method", "method": "echo", "id": "2", "params": ["x" * 4100]})
        client.ws.send(json.dumps([message]))
        with pytest.raises(ConnectionError, match=r'c\[1009,"Message too big"\]'):
            client.recv()
        assert client.call  # the server closed only this connection:
    with DDPClient(live.sockjs_url) as other:
        other.connect()
        assert other.call("echo", 1) == [1]


def _memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def test_pipelined_frames_behind_a_slow_method_do_not_grow_memory(start_server):
    """40 MiB of ``params:[{},{},...]`` frames queued behind a 3 s method: the server stops
    reading (TCP pushes back) instead of holding them parsed (~20 bytes of Python per byte)."""
    live = start_server()
    pid = live.process.pid
    frame_count, params = 400, ",".join(["{}"] * 35_000)  # 400 frames of 100 KiB
    ws = websocket.create_connection(live.ws_url, timeout=120)
    ws.send(json.dumps({"msg": "connect", "version": "1", "support": ["1"]}))
    assert json.loads(ws.recv())["msg"] == "connected"
    ws.send('{"msg":"method","method":"nope","id":"warm","params":[' + params + "]}")  # warm up
    while json.loads(ws.recv()).get("msg") != "updated":
        pass
    baseline = _memory(pid)["VmRSS"]
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass  # VmHWM then includes start-up, which only makes the bound looser

    def pipeline():
        ws.send('{"msg":"method","method":"sleep","id":"slow","params":[3]}')
        for n in range(frame_count):
            ws.send(f'{{"msg":"method","method":"nope","id":"{n}","params":[{params}]}}')

    sender = threading.Thread(target=pipeline)
    sender.start()
    results = set()
    while len(results) < frame_count + 1:
        reply = json.loads(ws.recv())
        if reply.get("msg") == "result":
            results.add(reply["id"])
    sender.join()
    assert answers_ping_raw(ws)
    ws.close()
    growth = _memory(pid)["VmHWM"] - baseline
    print(f"server peak RSS growth: {growth / 2**20:.1f} MiB")
    assert growth < 100 * 1024 * 1024, f"server grew by {growth / 2**20:.0f} MiB for 40 MiB of frames"


def answers_ping_raw(ws):
    ws.send('{"msg":"ping","id":"end"}')
    while True:
        if json.loads(ws.recv()) == {"msg": "pong", "id": "end"}:
            return True


def test_echo_of_a_value_that_survives_json_but_not_python(client):
    """Huge integers and surrogates travel as JavaScript would see them."""
    client.connect()
    client.send_raw('{"msg":"method","method":"echo","id":"h","params":[' + "9" * 5000 + ',"\\udc00"]}')
    replies = [client.recv(), client.recv()]
    result = next(r for r in replies if r["msg"] == "result")
    assert result["result"] == [{"$InfNaN": 1}, "\udc00"]
    assert to_json_value(float("inf")) == {"$InfNaN": 1}
