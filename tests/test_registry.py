"""The registry writer (only differences are written) and time/position parsing."""
import datetime

import pytest
from django.db import connection

from ddpctl.registry import (
    ConnectionEntry,
    NodeInfo,
    RegistryWriter,
    SubscriptionEntry,
    list_nodes,
    list_subscriptions,
    purge_stale_nodes,
)
from ddpctl.timespec import parse_duration, parse_point

NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)


def conn(i):
    return ConnectionEntry(f"c{i}", "10.0.0.1", None, "websocket", NOW)


def sub(i, docs=3):
    return SubscriptionEntry(f"c{i}", "1", "AllBooks", "[]", docs, ["books"], NOW)


@pytest.mark.django_db
def test_a_heartbeat_writes_only_what_changed():
    writer = RegistryWriter(NodeInfo("n1", "host", 1, ["http://host:8000"], "0", 15.0))
    with connection.cursor() as cursor:
        writer.register(cursor)
        assert writer.heartbeat(cursor, [conn(1), conn(2)], [sub(1), sub(2)]) == 4
        assert writer.heartbeat(cursor, [conn(1), conn(2)], [sub(1), sub(2)]) == 0  # nothing changed
        assert writer.heartbeat(cursor, [conn(1), conn(2)], [sub(1), sub(2, docs=4)]) == 1
        assert writer.heartbeat(cursor, [conn(1)], [sub(1)]) == 2  # a connection and its sub left
        rows = list_subscriptions(cursor)
        assert [(r["connection"], r["documents"]) for r in rows] == [("c1", 3)]
        assert [n["id"] for n in list_nodes(cursor)] == ["n1"]


@pytest.mark.django_db
def test_a_node_purged_while_paused_registers_again():
    writer = RegistryWriter(NodeInfo("n2", "host", 2, [], "0", 0.5))
    other = RegistryWriter(NodeInfo("n3", "host", 3, [], "0", 15.0))
    with connection.cursor() as cursor:
        writer.register(cursor)
        other.register(cursor)
        writer.heartbeat(cursor, [conn(1)], [sub(1)])
        cursor.execute("UPDATE ddpctl_node SET heartbeat_at = now() - interval '1 minute' WHERE id = 'n2'")
        assert [n["id"] for n in list_nodes(cursor)] == ["n3"]
        assert list_subscriptions(cursor) == []  # a stale node's subscriptions are not listed
        assert purge_stale_nodes(cursor) == ["n2"]
        cursor.execute("SELECT count(*) FROM ddpctl_subscription")
        assert cursor.fetchone()[0] == 0
        assert writer.heartbeat(cursor, [conn(1)], [sub(1)]) == 2  # re-registered, everything rewritten
        assert sorted(n["id"] for n in list_nodes(cursor)) == ["n2", "n3"]


def test_durations_and_points():
    assert parse_duration("90") == datetime.timedelta(seconds=90)
    assert parse_duration("15m") == datetime.timedelta(minutes=15)
    assert parse_duration("7d") == datetime.timedelta(days=7)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")
    assert parse_point("1234").position == 1234
    assert parse_point("10m", now=NOW).time == NOW - datetime.timedelta(minutes=10)
    assert parse_point("2026-11-21T09:30").time == datetime.datetime(2026, 11, 21, 9, 30, tzinfo=datetime.UTC)
    with pytest.raises(ValueError, match="neither a position"):
        parse_point("yesterday")
