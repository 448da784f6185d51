"""Which subscribers share an observer (a shared observer must never leak rows).

Pure tests of the decision (what a publication read of its subscriber -> observer scope),
then real clients of ``ddpctl serve`` scoped by a header, the client address, the user and
module state, each seeing only its own rows initially and after live inserts.
"""
import socket
from urllib.parse import urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.invocation import ConnectionHandle
from ddpctl.livedata.publication import Publication, _handler_for
from ddpctl.livedata.publish import Subscription
from ddpctl.livedata.sharing import PRIVATE, UNDECLARED, Reads, TrackedSubscription, decide
from ddpctl.testing import DDPClient

NOTE = "testapp.tenantnote"

# -- the decision, pure ------------------------------------------------------------------

# What a publication can read of its subscriber, as the value it gets.
READERS = {
    "params": lambda s: s.params,
    "name": lambda s: s.name,
    "user_id": lambda s: s.user_id,
    "id": lambda s: s.id,
    "connection.id": lambda s: s.connection.id,
    "connection.http_headers": lambda s: s.connection.http_headers.get("x-tenant"),
    "connection.client_address": lambda s: s.connection.client_address,
    "active": lambda s: s.active,
    "started_at": lambda s: s.started_at,
    "on_stop": lambda s: s.on_stop.__name__,
}
KEY_ONLY = {"params", "name"}


class Sink:
    def __getattr__(self, name):
        return lambda *args: None


subscribers = st.builds(
    lambda sub_id, conn_id, user_id, tenant, address, started: _subscription(
        sub_id, conn_id, user_id, tenant, address, started),
    st.sampled_from(["1", "2"]), st.sampled_from(["c1", "c2"]), st.sampled_from([None, 1, 2]),
    st.sampled_from(["a", "b"]), st.sampled_from(["127.0.0.1", "10.0.0.2"]), st.sampled_from([1.0, 2.0]))


def _subscription(sub_id, conn_id, user_id, tenant, address, started):
    handle = ConnectionHandle(id=conn_id, client_address=address, http_headers={"x-tenant": tenant})
    sub = Subscription(Sink(), sub_id, "Pub", [7], handle, user_id)
    sub.started_at = started
    return sub


def _scope(sub, readers, visible_per_user=(), declared=UNDECLARED):
    """The observer scope of ``sub`` for a publication that reads ``readers``, and what it read."""
    reads = Reads()
    tracked = TrackedSubscription(sub, reads)
    seen = tuple(READERS[name](tracked) for name in readers)
    return decide(reads, sub.user_id, visible_per_user=visible_per_user, declared=declared).scope, seen


@settings(max_examples=300)
@given(subscribers, subscribers, st.lists(st.sampled_from(sorted(READERS)), unique=True),
       st.lists(st.sampled_from(["testapp.note"]), max_size=1))
def test_subscribers_share_only_what_cannot_differ(one, two, readers, visible):
    scope_one, seen_one = _scope(one, readers, visible)
    scope_two, seen_two = _scope(two, readers, visible)
    if scope_one == scope_two:  # shared: everything it read is the same for both
        assert seen_one == seen_two
        assert not visible or one.user_id == two.user_id
    if set(readers) <= KEY_ONLY and not visible:
        assert scope_one == scope_two == ("everyone",)
    if set(readers) <= KEY_ONLY | {"user_id"}:  # the user only: a cohort, never private
        assert scope_one[0] in ("everyone", "user")
        assert (scope_one == scope_two) == (one.user_id == two.user_id or scope_one == ("everyone",))
    if set(readers) - KEY_ONLY - {"user_id"}:
        assert scope_one[0] == scope_two[0] == "private" and scope_one != scope_two


@given(subscribers, subscribers, st.lists(st.sampled_from(sorted(READERS)), unique=True),
       st.booleans(), st.sampled_from(["a", None, ("t", 1), PRIVATE]))
def test_a_declared_sharing_key_decides_and_the_user_still_counts(one, two, readers, visible, declared):
    per_user = ["testapp.note"] if visible else []
    scope_one, _ = _scope(one, readers, per_user, declared)
    scope_two, _ = _scope(two, readers, per_user, declared)
    if declared is PRIVATE:
        assert scope_one[0] == "private" and scope_one != scope_two
    elif visible or "user_id" in readers:
        assert scope_one == ("key", declared, "user", one.user_id)
        assert (scope_one == scope_two) == (one.user_id == two.user_id)
    else:
        assert scope_one == scope_two == ("key", declared)


def test_an_unhashable_sharing_key_is_a_clear_error():
    with pytest.raises(TypeError, match="hashable"):
        decide(Reads(), None, declared=["a"])


def test_publication_user_and_user_id_count_as_reading_the_user():
    sub = _subscription("1", "c", None, "a", "127.0.0.1", 1.0)

    class Probe(Publication, register=False):
        queries = []

    for read in (lambda p: p.user, lambda p: p.user_id, lambda p: (p.user, p.user)):
        reads = Reads()
        pub = Probe(TrackedSubscription(sub, reads))
        read(pub)
        assert decide(reads, None).scope == ("user", None)
    # the user object is cached, yet reading it again after a reset still counts
    reads = Reads()
    pub = Probe(TrackedSubscription(sub, reads))
    assert pub.user is None
    reads.clear()
    assert pub.user is None
    assert reads.user


def test_tracked_subscription_passes_reads_and_writes_through():
    sub = _subscription("1", "c", 5, "a", "127.0.0.1", 1.0)
    reads = Reads()
    tracked = TrackedSubscription(sub, reads)
    assert (tracked.id, tracked.user_id, tracked.params) == ("1", 5, [7])
    tracked.extra = "x"
    assert sub.extra == "x"
    assert reads == Reads(user={"subscription.user_id"}, private={"subscription.id", "subscription.extra"})


def test_current_invocation_is_out_of_reach_of_a_publication(caplog):
    """Per-connection state of a method invocation cannot leak into a shared observer."""
    from ddpctl.invocation import current_invocation
    from ddpctl.livedata.publish import publications

    failures = []

    class Recorder(Sink):
        def sub_failed(self, sub_id, error):
            failures.append(error)

    class ReadsInvocation(Publication, register=False):
        name = "test_sharing.ReadsInvocation"

        def get_queries(self):
            return [current_invocation().connection.http_headers]

    publications.register(ReadsInvocation.name, _handler_for(ReadsInvocation))
    try:
        publications.start(Subscription(Recorder(), "1", ReadsInvocation.name, []))
    finally:
        publications.unregister(ReadsInvocation.name)
    assert [e.error for e in failures] == [500]
    assert "current_invocation() called outside a DDP method" in caplog.text


# -- end to end ----------------------------------------------------------------------------

@pytest.fixture
def live(start_server, sql):
    sql("TRUNCATE testapp_tenantnote RESTART IDENTITY")
    yield start_server("--log-level", "debug")
    sql("TRUNCATE testapp_tenantnote RESTART IDENTITY")


def insert_note(sql, tenant, text):
    return str(sql("INSERT INTO testapp_tenantnote (tenant, text) VALUES (%s, %s) RETURNING id",
                   [tenant, text], fetch=True)[0][0])


def texts(client):
    return {doc["text"] for doc in client.collections.get(NOTE, {}).values()}


def assert_each_sees_only_its_own(sql, tenants):
    """``tenants``: {tenant: [subscribed clients]}.  Rows of every tenant existed before they
    subscribed; after live inserts for every tenant, each client sees its tenant's rows only."""
    for tenant, clients in tenants.items():
        for client in clients:
            assert texts(client) == {f"x-{tenant}-old"}, (tenant, texts(client))
    for round in ("new", "newer"):
        for tenant in tenants:
            insert_note(sql, tenant, f"x-{tenant}-{round}")
    for tenant, clients in tenants.items():
        for client in clients:
            client.call("echo")  # write fence: every change committed before it has been sent
            assert texts(client) == {f"x-{tenant}-old", f"x-{tenant}-new", f"x-{tenant}-newer"}, \
                (tenant, texts(client))


def subscribe_all(tenants, publication, *params):
    for clients in tenants.values():
        for client in clients:
            client.connect()
            client.subscribe(publication, *params)


@pytest.mark.parametrize("publication", ["NotesByTenantHeader", "NotesByTenantKey"])
def test_tenants_chosen_by_a_header_never_see_each_others_rows(live, sql, publication):
    for tenant in ("acme", "globex", "initech"):
        insert_note(sql, tenant, f"x-{tenant}-old")
        insert_note(sql, tenant, f"other-{tenant}")  # filtered out by the params
    tenants = {t: [DDPClient(live.ws_url, header={"X-Tenant": t}) for _ in range(2)]
               for t in ("acme", "globex")}
    tenants["initech"] = [DDPClient(live.sockjs_url, header={"X-Tenant": "initech"})]
    try:
        subscribe_all(tenants, publication, "x-")
        assert_each_sees_only_its_own(sql, tenants)
        observers = tenants["acme"][0].call("observers_of", publication)
        if publication == "NotesByTenantKey":  # declared: one observer per tenant, shared
            assert observers == [["('key', 'acme')", 2], ["('key', 'globex')", 2], ["('key', 'initech')", 1]]
            assert "joins observer ('key', 'acme'): sharing_key() returned 'acme'" in live.output()
        else:  # the connection was read: an observer per subscription
            assert [count for _, count in observers] == [1] * 5
            assert all(scope.startswith("('private', ") for scope, _ in observers)
            assert "private: reads subscription.connection" in live.output()
    finally:
        for clients in tenants.values():
            for client in clients:
                client.close()


def _client_from(url, address):
    """A DDP client whose TCP connection comes from ``address`` (any of 127.0.0.0/8)."""
    parsed = urlparse(url)
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect((parsed.hostname, parsed.port))
    return DDPClient(url, socket=sock)


def test_tenants_chosen_by_client_address_never_see_each_others_rows(live, sql):
    addresses = ("127.0.0.1", "127.0.0.2")
    for address in addresses:
        insert_note(sql, address, f"x-{address}-old")
    tenants = {a: [_client_from(live.ws_url, a), _client_from(live.ws_url, a)] for a in addresses}
    try:
        subscribe_all(tenants, "NotesByClientAddress", "x-")
        assert_each_sees_only_its_own(sql, tenants)
    finally:
        for clients in tenants.values():
            for client in clients:
                client.close()


def test_users_chosen_by_subscription_user_id_never_see_each_others_rows(live, sql):
    clients = [DDPClient(live.ws_url) for _ in range(3)]
    try:
        tenants = {}
        for client, name in zip(clients, ("ann", "ben", "ann"), strict=True):
            client.connect()
            user_id = str(client.call("login_as", name))
            tenants.setdefault(user_id, []).append(client)
        for user_id in tenants:
            insert_note(sql, user_id, f"x-{user_id}-old")
        for group in tenants.values():
            for client in group:
                client.subscribe("NotesBySubscriptionUser", "x-")
        assert_each_sees_only_its_own(sql, tenants)
        observers = clients[0].call("observers_of", "NotesBySubscriptionUser")
        assert sorted(count for _, count in observers) == [1, 2]  # one per user
    finally:
        for client in clients:
            client.close()


def test_a_publication_declared_private_is_never_shared(live, sql):
    """Module state is invisible to ddpctl: the PRIVATE declaration keeps tenants apart."""
    for tenant in ("red", "blue"):
        insert_note(sql, tenant, f"x-{tenant}-old")
    tenants = {"red": [DDPClient(live.ws_url)], "blue": [DDPClient(live.ws_url)]}
    try:
        for tenant, (client,) in tenants.items():
            client.connect()
            client.call("set_current_tenant", tenant)
            client.subscribe("NotesByModuleState", "x-")
        assert_each_sees_only_its_own(sql, tenants)
    finally:
        for (client,) in tenants.values():
            client.close()
