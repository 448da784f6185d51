"""``ddpctl top``'s arithmetic (:func:`ddpctl.dashboard.rates.dashboard`): rates from two
readings of each node, totals, and the busiest publications, for any readings."""
import math

from hypothesis import assume, given
from hypothesis import strategies as st

from ddpctl.dashboard.rates import RATES, dashboard
from ddpctl.dashboard.snapshot import Snapshot

counts = st.integers(min_value=0, max_value=10**9)
names = st.sampled_from(["AllBooks", "AllGenres", "MyBooks", "BooksByAuthorEmail"])


@st.composite
def node_pair(draw, node_id):
    """Two readings of one node: counters that only grow, by a clock that moves forward
    (or a restart: another pid; or a registry stand-in)."""
    kind = draw(st.sampled_from(["node", "node", "restarted", "registry", "new"]))
    clock = draw(st.floats(min_value=0, max_value=1e6))
    elapsed = draw(st.floats(min_value=0.01, max_value=100))
    pubs_before = draw(st.dictionaries(names, counts, max_size=4))
    pubs_after = {name: sent + draw(counts) for name, sent in pubs_before.items()}
    for name, sent in draw(st.dictionaries(names, counts, max_size=4)).items():
        pubs_after.setdefault(name, sent)  # new since the first reading: it was at 0 then

    def reading(at, sent, pubs, pid):
        return {"node": node_id, "hostname": "h", "pid": pid, "source": "node", "clock": at,
                "connections": draw(counts), "subscriptions": draw(counts), "observers": draw(counts),
                "messages_sent": sent, "bytes_sent": sent * 10, "messages_received": sent,
                "method_calls": sent, "ready": True, "buffered_bytes": 0, "errors": 0,
                "dispatcher": {"changes": sent, "lag_seconds": 0.0, "position": sent},
                "db": {"user": {"in_use": 0, "size": 10}},
                "publications": {n: {"subscriptions": 1, "observers": 1, "documents": 2, "messages_sent": v}
                                 for n, v in pubs.items()}}

    sent = draw(counts)
    more = draw(counts)
    before = reading(clock, sent, pubs_before, 100)
    after = reading(clock + elapsed, sent + more, pubs_after, 101 if kind == "restarted" else 100)
    if kind == "registry":
        after = {"node": node_id, "hostname": "h", "pid": 100, "connections": 3, "subscriptions": 4,
                 "source": "registry"}
    pub_rates = {name: (sent - pubs_before.get(name, 0)) / elapsed for name, sent in pubs_after.items()}
    return kind, (None if kind == "new" else before), after, more / elapsed, pub_rates


@given(st.lists(st.sampled_from("ABCDEFGH"), unique=True, max_size=6).flatmap(
    lambda ids: st.tuples(*(node_pair(i) for i in ids)).map(
        lambda pairs: dict(zip(ids, pairs, strict=True)))))
def test_rates_totals_and_ranking(nodes):
    before = Snapshot({i: b for i, (_, b, _, _, _) in nodes.items() if b is not None}, taken_at=1.0)
    after = Snapshot({i: a for i, (_, _, a, _, _) in nodes.items()}, taken_at=2.0)
    view = dashboard(before, after, top=3)
    rows = {row["node"]: row for row in view["nodes"]}
    assert set(rows) == set(nodes)
    expected: dict[str, float] = {}
    for node_id, (kind, _before, _after, rate, pub_rates) in nodes.items():
        if kind == "node":
            for name, pub_rate in pub_rates.items():
                expected[name] = expected.get(name, 0.0) + pub_rate
        row = rows[node_id]
        if kind == "node":
            assert math.isclose(row["messages_per_second"], rate, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(row["changes_per_second"], rate, rel_tol=1e-9, abs_tol=1e-9)
        else:  # no two readings of the same process: no rate, never a made-up one
            assert all(row[name] is None for name in RATES)
        for name in RATES:
            assert row[name] is None or row[name] >= 0
    assert view["totals"]["nodes"] == len(nodes)
    assert view["totals"]["connections"] == (sum(r["connections"] for r in rows.values()) if rows else None)
    ranked = [p["messages_per_second"] or 0.0 for p in view["publications"]]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) <= 3
    for pub in view["publications"]:
        if pub["publication"] in expected:
            assert math.isclose(pub["messages_per_second"], expected[pub["publication"]], rel_tol=1e-9,
                                abs_tol=1e-9)
        else:
            assert pub["messages_per_second"] is None
    shown = {p["publication"] for p in view["publications"]}
    assert all(rate <= min(ranked) + 1e-9 for name, rate in expected.items() if name not in shown)
    assert view["interval"] == 1.0


def test_first_reading_has_no_rates():
    after = Snapshot({"A": {"node": "A", "pid": 1, "source": "node", "clock": 5.0, "messages_sent": 10,
                            "connections": 1,
                            "publications": {"P": {"subscriptions": 1, "messages_sent": 3}}}})
    view = dashboard(None, after)
    assert view["nodes"][0]["messages_per_second"] is None
    assert view["publications"] == [{"publication": "P", "subscriptions": 1, "observers": 0, "documents": 0,
                                     "messages_per_second": None}]
    assert view["interval"] is None


@given(st.lists(st.sampled_from("ABCDEFGH"), unique=True, min_size=1, max_size=4).flatmap(
    lambda ids: st.tuples(*(node_pair(i) for i in ids)).map(
        lambda pairs: dict(zip(ids, pairs, strict=True)))),
    st.integers(min_value=80, max_value=220), st.integers(min_value=0, max_value=10**5))
def test_the_screen_fits_the_terminal_without_cutting_a_value(nodes, width, scale):
    """``ddpctl top`` on a terminal of ``width`` columns (80 and up) for nodes of up to
    100,000 connections and a million messages/s: no line longer, no value or header cut
    ("…"), connections, subscriptions, observers, messages/s, lag and state always shown;
    every column once there is room."""
    from rich.console import Console

    from ddpctl.dashboard.view import render

    def sized(reading):  # counts of a busy node, node ids as long as real ones
        if reading is None:
            return None
        reading = {**reading, "node": reading["node"] * 17}
        for key in ("connections", "subscriptions", "observers"):
            if key in reading:
                reading[key] = reading[key] % (scale + 1)
        return reading

    before = Snapshot({i * 17: sized(b) for i, (_, b, _, _, _) in nodes.items() if b is not None},
                      taken_at=1.0)
    after = Snapshot({i * 17: sized(a) for i, (_, _, a, _, _) in nodes.items()}, taken_at=2.0)
    view = dashboard(before, after, top=3)
    assume(all((row[rate] or 0) < 10**6 for row in view["nodes"] for rate in RATES))
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(render(view, 1.0, width=width))
    text = console.export_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("node "))
    table = lines[start:start + 1 + len(nodes)]  # the header line and one line per node
    assert "…" not in "\n".join(table), text
    assert all(len(line) <= width for line in table), text
    for header in ("conns", "subs", "observers", "msg/s", "lag", "state"):
        assert header in table[0], text
    if width >= 200:
        for header in ("host:pid", "position", "buffered", "db", "errors", "out/s", "calls/s", "changes/s"):
            assert header in table[0], text
