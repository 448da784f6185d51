"""Rate limits on a live ``ddpctl serve``: Meteor's default rule on ``login``, a settings rule
on a subscription, a ``ddp.py`` rule on a method (tests/settings_rate_limits.py)."""
import re

import pytest
from conftest import SERVER_ARGS

from ddpctl.ddp.errors import MeteorError
from ddpctl.testing import DDPClient, LiveServer, ServerDidNotStart

REASON = re.compile(r"Error, too many requests\. Please slow down\. You must wait (\d+) seconds before "
                    r"trying again\.")


@pytest.fixture(scope="module")
def server(live_database_url):
    with LiveServer([*SERVER_ARGS, "--settings", "settings_rate_limits"],
                    env={"DATABASE_URL": live_database_url}) as live:
        yield live


@pytest.fixture(params=["raw", "sockjs"])
def url(request, server):
    return server.ws_url if request.param == "raw" else server.sockjs_url


def refusal(call):
    """The error of ``call()``, which must fail."""
    with pytest.raises(MeteorError) as info:
        call()
    return info.value


def assert_too_many_requests(error, most_ms):
    assert error.error == "too-many-requests"
    wait = error.details["timeToReset"]
    assert 0 <= wait <= most_ms
    assert REASON.fullmatch(error.reason).group(1) == str(-(-wait // 1000))


LOGIN = {"user": {"username": "nobody"}, "password": {"digest": "0" * 64, "algorithm": "sha-256"}}


def six_logins(url):
    """A new connection calls ``login`` six times; the connection and the six errors."""
    client = DDPClient(url)
    client.connect()
    return client, [refusal(lambda: client.call("login", LOGIN)) for _ in range(6)]


def test_the_sixth_login_within_ten_seconds_gets_too_many_requests_on_that_connection_only(url):
    client, errors = six_logins(url)
    if errors[5].error != "too-many-requests":
        # Windows are fixed (Meteor's): the first one began when the server started, and
        # these calls straddled its end.  A new window began with them; six more calls on a
        # new connection take far less than its 10 s.
        client.close()
        client, errors = six_logins(url)
    with client:
        assert [e.error for e in errors[:5]] == [403] * 5  # counted whether or not login works
        assert_too_many_requests(errors[5], 10_000)
        assert_too_many_requests(refusal(lambda: client.call("login", LOGIN)), 10_000)
        assert client.call("echo", 1) == [1]  # other methods are not limited
        with DDPClient(url) as other:
            other.connect()
            assert [refusal(lambda: other.call("login", LOGIN)).error for _ in range(5)] == [403] * 5


def test_a_rule_from_settings_refuses_a_subscription_with_nosub(url):
    with DDPClient(url) as client:
        client.connect()
        first, second = client.subscribe("echo_params", 1), client.subscribe("echo_params", 2)
        client.send({"msg": "sub", "id": "third", "name": "echo_params", "params": [3]})
        while (reply := client.recv()).get("msg") != "nosub":
            pass
        assert reply["id"] == "third"
        error = reply["error"]
        assert (error["error"], error["errorType"], error["isClientSafe"]) == ("too-many-requests",
                                                                              "Meteor.Error", True)
        assert_too_many_requests(MeteorError(error["error"], error["reason"], error["details"]), 600_000)
        assert client.call("echo", 1) == [1]  # after anything the publication would have sent
        assert set(client.collections["params"]) == {first, second}  # the third never ran
        client.subscribe("numbers")  # other publications are not limited
        with DDPClient(url) as other:
            other.connect()
            other.subscribe("echo_params", 4)  # nor other connections


def test_a_rule_added_in_ddp_py_refuses_calls_before_the_method_runs(server):
    with DDPClient(server.ws_url) as client:
        client.connect()
        runs = [client.call("counted") for _ in range(3)]
        for _ in range(2):
            assert_too_many_requests(refusal(lambda: client.call("counted")), 600_000)
    with DDPClient(server.ws_url) as other:
        other.connect()
        assert other.call("counted") == runs[-1] + 1  # the refused calls did not run


def test_a_malformed_rate_limit_setting_stops_the_server_at_start(start_server):
    with pytest.raises(ServerDidNotStart, match=r"DDPCTL_RATE_LIMITS\[0\]: unknown rate limit matcher key "
                                                r"'userId' \(use 'user_id'\)"):
        start_server("--settings", "settings_rate_limits",
                     env={"TEST_DDPCTL_RATE_LIMITS": '[{"userId": "x"}]'})
