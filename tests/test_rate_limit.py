"""Rate limits (Meteor's DDPRateLimiter) with plain calls and a fake clock: the rule engine
against a transcription of Meteor's algorithm, bounded memory, Meteor's default rule, the
settings, and the session's hook."""
import json
import logging
import math
from types import SimpleNamespace

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddpctl.ddp.session import MethodCall, Session
from ddpctl.ratelimit import DDPRateLimiter, Event, Reply, each, one_of
from ddpctl.ratelimit.config import read_settings
from ddpctl.ratelimit.engine import MATCHER_KEYS, RateLimiter


class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


# -- a model: Meteor's rate-limit.js, transcribed as directly as possible ---------------------

class MeteorModel:
    """Two passes (increment, then check), counters in plain dicts, no memory bound."""

    def __init__(self, clock):
        self.clock = clock
        self.rules = {}
        self.next_id = 0

    def add_rule(self, matcher, num_requests, time_interval):
        self.next_id += 1
        self.rules[self.next_id] = {"matchers": dict(matcher), "n": num_requests,
                                    "interval": time_interval, "last": self.clock(), "counters": {}}
        return self.next_id

    def remove_rule(self, rule_id):
        return self.rules.pop(rule_id, None) is not None

    @staticmethod
    def match(rule, event):
        for key, matcher in rule["matchers"].items():
            if matcher is None:
                continue
            value = getattr(event, key)
            if callable(matcher):
                if not matcher(value):
                    return False
            elif matcher != value:
                return False
        return True

    @staticmethod
    def key(rule, event):
        return tuple((k, getattr(event, k)) for k, m in rule["matchers"].items() if m is not None)

    def increment(self, event):
        for rule in [r for r in self.rules.values() if self.match(r, event)]:
            key = self.key(rule, event)
            if self.clock() - rule["last"] > rule["interval"]:
                rule["counters"] = {}
                rule["last"] = self.clock()
            rule["counters"][key] = rule["counters"].get(key, 0) + 1

    def check(self, event):
        allowed, time_to_reset, left = True, 0, math.inf
        for rule in [r for r in self.rules.values() if self.match(r, event)]:
            key = self.key(rule, event)
            num = rule["counters"].get(key)
            time_to_next_reset = rule["interval"] - (self.clock() - rule["last"])
            if time_to_next_reset < 0:
                rule["counters"] = {}
                rule["last"] = self.clock()
                time_to_next_reset = rule["interval"]
                num = 0
            if num > rule["n"]:
                if time_to_reset < time_to_next_reset:
                    time_to_reset = time_to_next_reset
                allowed, left = False, 0
            elif rule["n"] - num < left and allowed:
                time_to_reset = time_to_next_reset
                left = rule["n"] - num
        return Reply(allowed, time_to_reset, left)


POOLS = {
    "type": ["method", "subscription"],
    "name": ["login", "a", "b"],
    "user_id": [None, "u1", "u2"],
    "connection_id": ["c1", "c2", "c3"],
    "client_address": [None, "10.0.0.1", "10.0.0.2"],
}

events = st.builds(Event, *(st.sampled_from(POOLS[key]) for key in MATCHER_KEYS))


def matcher_values(key):
    pool = POOLS[key]
    return st.one_of(st.none(), st.sampled_from(pool), st.just(each),
                     st.lists(st.sampled_from(pool), unique=True).map(lambda vs: one_of(*vs)))


matchers = st.fixed_dictionaries({}, optional={key: matcher_values(key) for key in MATCHER_KEYS})
operations = st.lists(st.one_of(
    st.tuples(st.just("add"), matchers, st.integers(1, 4), st.integers(1, 50)),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(st.just("tick"), st.integers(0, 60)),
    st.tuples(st.just("hit"), events),
    st.tuples(st.just("hit"), events),
    st.tuples(st.just("hit"), events),
), max_size=80)


@hypothesis.settings(max_examples=400, deadline=None)
@given(operations)
def test_engine_replies_like_meteors_algorithm(ops):
    clock = Clock()
    engine, model = RateLimiter(clock), MeteorModel(clock)
    ids = []
    for op in ops:
        if op[0] == "add":
            ids.append((engine.add_rule(*op[1:]), model.add_rule(*op[1:])))
        elif op[0] == "remove":
            if ids:
                engine_id, model_id = ids.pop(op[1] % len(ids))
                assert engine.remove_rule(engine_id) is model.remove_rule(model_id) is True
                assert engine.remove_rule(engine_id) is False
        elif op[0] == "tick":
            clock.now += op[1]
        else:
            model.increment(op[1])
            assert engine.hit(op[1]) == model.check(op[1])


@hypothesis.settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.lists(st.tuples(st.integers(0, 30), st.integers(0, 9)), max_size=120))
def test_counters_stay_bounded_and_equal_the_model_while_they_fit(max_keys, hits):
    """However many distinct addresses come, a rule keeps at most ``max_keys`` counters;
    while a window has no more distinct keys than that, nothing is dropped."""
    clock = Clock()
    engine, model = RateLimiter(clock, max_keys=max_keys), MeteorModel(clock)
    matcher = {"client_address": each}
    engine_id = engine.add_rule(matcher, 3, 20)
    model.add_rule(matcher, 3, 20)
    [rule] = engine.rules()
    window_keys, window_start = set(), rule.last_reset
    for dt, address in hits:
        clock.now += dt
        event = Event("method", "m", client_address=f"10.0.0.{address}")
        model.increment(event)
        expected = model.check(event)
        reply = engine.hit(event)
        if rule.last_reset != window_start:
            window_keys, window_start = set(), rule.last_reset
        window_keys.add(address)
        assert len(rule.counters) <= max_keys
        if len(window_keys) <= max_keys:
            assert reply == expected
    assert engine.remove_rule(engine_id)


def test_a_flood_of_new_addresses_neither_grows_memory_nor_lifts_a_limit():
    clock = Clock()
    engine = RateLimiter(clock, max_keys=100)
    engine.add_rule({"client_address": each}, 5, 10_000)
    attacker = Event("method", "login", client_address="6.6.6.6")
    replies = [engine.hit(attacker) for _ in range(6)]
    assert [r.allowed for r in replies] == [True] * 5 + [False]
    for i in range(10_000):
        clock.now += 0 if i % 10 else 1
        assert engine.hit(Event("method", "login", client_address=f"addr-{i}")).allowed
    [rule] = engine.rules()
    assert len(rule.counters) <= 100
    assert not engine.hit(attacker).allowed


def test_counters_of_an_idle_rule_are_dropped_once_its_window_passed():
    clock = Clock()
    engine = RateLimiter(clock)
    engine.add_rule({"name": "a", "connection_id": each}, 2, 1000)
    engine.add_rule({"name": "b"}, 2, 1000)
    for i in range(50):
        engine.hit(Event("method", "a", connection_id=f"c{i}"))
    rule_a = engine.rules()[0]
    assert len(rule_a.counters) == 50
    clock.now += 1001
    engine.hit(Event("method", "b"))  # another rule's event
    assert len(rule_a.counters) == 0


def test_refused_calls_count_and_windows_are_fixed_from_the_rule_creation():
    clock = Clock()
    engine = RateLimiter(clock)
    engine.add_rule({"name": "m"}, 2, 1000)
    event = Event("method", "m")
    clock.now += 600
    assert engine.hit(event) == Reply(True, 400, 1)
    assert engine.hit(event) == Reply(True, 400, 0)
    assert engine.hit(event) == Reply(False, 400, 0)
    clock.now += 400  # exactly the interval: not yet over (Meteor: "more than")
    assert engine.hit(event) == Reply(False, 0, 0)
    clock.now += 1  # the next window starts now, with this event
    assert engine.hit(event) == Reply(True, 1000, 1)


def test_no_rule_matched_means_unlimited():
    engine = RateLimiter(Clock())
    engine.add_rule({"type": "subscription"}, 1, 1000)
    for _ in range(3):
        assert engine.hit(Event("method", "m")) == Reply(True, 0, math.inf)


@pytest.mark.parametrize("matcher, num_requests, time_interval", [
    ({"userId": "x"}, 1, 1), ({"method": "x"}, 1, 1), ({}, 0, 1000), ({}, 5, 0), ({}, -1, 1000),
    ({}, True, 1000), ({}, 2.5, 1000), ({}, "5", 1000), (["name"], 1, 1),
])
def test_add_rule_refuses_what_would_never_work(matcher, num_requests, time_interval):
    with pytest.raises(ValueError):
        RateLimiter(Clock()).add_rule(matcher, num_requests, time_interval)


# -- the DDP limiter: Meteor's default rule, errors, settings ---------------------------------

def limiter(clock=None, **values):
    lim = DDPRateLimiter(clock=clock or Clock(), settings=SimpleNamespace(**values))
    lim.configure()  # the rules' windows start now
    return lim


def call(lim, name, connection="c1", user=None, address="127.0.0.1", kind="method"):
    return lim.refusal(Event(kind, name, user, connection, address))


@pytest.mark.parametrize("name", ["login", "createUser", "resetPassword", "forgotPassword"])
def test_default_rule_refuses_the_sixth_call_in_ten_seconds_per_connection(name):
    clock = Clock()
    lim = limiter(clock)
    for i in range(5):
        clock.now += 100
        assert call(lim, name, user="u1" if i % 2 else None) is None
    clock.now += 500
    error = call(lim, name)
    assert json.dumps(error.to_json()) == json.dumps({
        "isClientSafe": True, "error": "too-many-requests",
        "reason": "Error, too many requests. Please slow down. You must wait 9 seconds before trying again.",
        "details": {"timeToReset": 9000},
        "message": "Error, too many requests. Please slow down. You must wait 9 seconds before trying "
                   "again. [too-many-requests]",
        "errorType": "Meteor.Error"})
    assert call(lim, name, connection="c2") is None  # other connections are not limited
    other = "login" if name != "login" else "createUser"
    assert call(lim, other) is None  # each method has its own counter
    assert call(lim, "anything_else") is None
    assert call(lim, name, kind="subscription") is None
    clock.now += 9001  # the window is over
    assert call(lim, name) is None


@given(st.lists(st.tuples(st.integers(0, 4000), st.sampled_from(["c1", "c2"]),
                          st.sampled_from(["login", "createUser", "echo"])), max_size=60))
@hypothesis.settings(deadline=None)
def test_default_rule_counts_each_connection_and_method_in_fixed_ten_second_windows(calls):
    clock = Clock()
    lim = limiter(clock)
    window_start, counts = clock.now, {}
    for dt, connection, name in calls:
        clock.now += dt
        if name == "echo":
            assert call(lim, name, connection) is None
            continue
        if clock.now - window_start > 10_000:  # the first limited call after the window restarts it
            window_start, counts = clock.now, {}
        counts[connection, name] = counts.get((connection, name), 0) + 1
        error = call(lim, name, connection)
        if counts[connection, name] <= 5:
            assert error is None
        else:
            wait = 10_000 - (clock.now - window_start)
            assert error.details == {"timeToReset": wait}
            assert f"You must wait {math.ceil(wait / 1000)} seconds" in error.reason


def test_default_rule_can_be_removed_or_changed():
    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE=False)
    assert lim.default_rule_id is None and lim.rules() == []
    assert all(call(lim, "login") is None for _ in range(20))

    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE={"num_requests": 2})
    assert [call(lim, "login") is None for _ in range(3)] == [True, True, False]
    assert lim.rules()[0]["time_interval"] == 10_000

    lim = limiter()
    assert lim.remove_default_rule() is True
    assert lim.remove_default_rule() is False
    assert all(call(lim, "login") is None for _ in range(20))
    lim.add_default_rule(1, 5000)
    lim.add_default_rule(3, 5000)  # replaces it
    assert len(lim.rules()) == 1
    assert [call(lim, "login", connection="c9") is None for _ in range(4)] == [True] * 3 + [False]


def test_settings_rules_in_every_form():
    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE=False, DDPCTL_RATE_LIMITS=[
        {"type": "subscription", "name": {"in": ["feed", "news"]}, "user_id": {"each": True},
         "num_requests": 2, "time_interval": 5000},
        {"type": "method", "name": {"predicate": "test_rate_limit.starts_with_admin"}, "num_requests": 1},
    ])
    feeds = [call(lim, "feed", user="u1", kind="subscription") is None for _ in range(3)]
    assert feeds == [True, True, False]
    assert call(lim, "feed", user="u2", kind="subscription") is None
    assert call(lim, "news", user="u1", kind="subscription") is None
    assert call(lim, "other", user="u1", kind="subscription") is None
    assert [call(lim, "admin.x", connection=c) is None for c in ("c1", "c2")] == [True, False]  # all share
    assert call(lim, "public.x") is None


def starts_with_admin(name):
    return name.startswith("admin.")


@pytest.mark.parametrize("values", [
    {"DDPCTL_RATE_LIMITS": {"name": "x"}},
    {"DDPCTL_RATE_LIMITS": ["name"]},
    {"DDPCTL_RATE_LIMITS": [{"userId": "x"}]},
    {"DDPCTL_RATE_LIMITS": [{"name": "x", "num_requests": 0}]},
    {"DDPCTL_RATE_LIMITS": [{"name": "x", "time_interval": "1s"}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"in": "login"}}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"each": False}}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"predicate": "no.such.module.fn"}}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"predicate": "ddpctl.ratelimit.config.DEFAULT_RULE_METHODS"}}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"regex": "^a"}}]},
    {"DDPCTL_RATE_LIMITS": [{"name": {"in": ["a"], "each": True}}]},
    {"DDPCTL_RATE_LIMIT_DEFAULT_RULE": 5},
    {"DDPCTL_RATE_LIMIT_DEFAULT_RULE": {"numRequests": 5}},
    {"DDPCTL_RATE_LIMIT_MAX_KEYS": 0},
])
def test_malformed_settings_are_refused_with_the_setting_named(values, settings):
    with pytest.raises(ValueError, match="DDPCTL_RATE_LIMIT"):
        read_settings(SimpleNamespace(**values))
    for name, value in values.items():
        setattr(settings, name, value)
    from ddpctl.checks import check_settings

    assert [p.id for p in check_settings()] == ["ddpctl.E010"]


def test_a_predicate_that_raises_refuses_with_500_and_is_logged(caplog):
    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE=False)

    def broken(value):
        raise KeyError("bug")

    lim.add_rule({"name": broken})
    with caplog.at_level(logging.ERROR):
        error = call(lim, "m")
    assert (error.error, error.reason) == (500, "Internal server error")
    assert "KeyError" in caplog.text


def test_error_message_can_be_set():
    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE=False)
    lim.add_rule({"name": "m"}, 1, 3000)
    lim.set_error_message("slow down")
    call(lim, "m")
    assert call(lim, "m").reason == "slow down"
    lim.set_error_message(lambda reply: f"wait {reply.time_to_reset} ms")
    assert call(lim, "m").reason == "wait 3000 ms"


def test_removing_a_rule_lifts_its_limit():
    lim = limiter(DDPCTL_RATE_LIMIT_DEFAULT_RULE=False)
    rule_id = lim.add_rule({"type": "method", "name": "m"}, 1, 60_000)
    assert [call(lim, "m") is None for _ in range(2)] == [True, False]
    assert lim.remove_rule(rule_id) is True
    assert call(lim, "m") is None
    assert lim.remove_rule(rule_id) is False


# -- the session asks before a method or subscription runs ------------------------------------

def session_with(refuse):
    asked = []

    def rate_limit(kind, name):
        asked.append((kind, name))
        return refuse(kind, name)

    s = Session(has_method=lambda n: n != "missing", has_publication=lambda n: n != "missing",
                session_id_factory=lambda: "S" * 17, rate_limit=rate_limit)
    s.receive(json.dumps({"msg": "connect", "version": "1", "support": ["1"]}))
    return s, asked


def test_session_refuses_a_limited_method_before_it_runs():
    from ddpctl.ddp.errors import MeteorError

    error = MeteorError("too-many-requests", "slow", {"timeToReset": 5})
    s, asked = session_with(lambda kind, name: error if name == "limited" else None)
    out = s.process({"msg": "method", "id": "1", "method": "limited", "params": []})
    assert out.work is None
    assert out.messages == [{"msg": "updated", "methods": ["1"]},
                            {"msg": "result", "id": "1", "error": error.to_json()}]
    out = s.process({"msg": "method", "id": "2", "method": "free", "params": [], "randomSeed": "x"})
    assert out.work == MethodCall("2", "free", [], "x") and out.messages == []
    out = s.process({"msg": "method", "id": "3", "method": "missing", "params": []})
    assert out.messages[0]["error"]["error"] == 404  # unknown methods are not counted (Meteor)
    s.process({"msg": "method", "id": 4, "method": "limited"})  # malformed: not counted either
    assert asked == [("method", "limited"), ("method", "free")]


def test_session_refuses_a_limited_subscription_with_nosub():
    from ddpctl.ddp.errors import MeteorError

    error = MeteorError("too-many-requests", "slow", {"timeToReset": 5})
    s, asked = session_with(lambda kind, name: error if name == "limited" else None)
    out = s.process({"msg": "sub", "id": "a", "name": "limited", "params": []})
    assert out.work is None
    assert out.messages == [{"msg": "nosub", "id": "a", "error": error.to_json()}]
    assert "a" not in s.subscriptions
    out = s.process({"msg": "sub", "id": "b", "name": "free"})
    assert out.work is not None
    s.process({"msg": "sub", "id": "b", "name": "free"})  # already active: ignored, not counted
    s.process({"msg": "sub", "id": "c", "name": "missing"})  # unknown: 404, not counted
    assert asked == [("subscription", "limited"), ("subscription", "free")]
