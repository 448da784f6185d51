"""Trusted proxies (ddpctl.server.forwarded): the client's address and scheme from
``X-Forwarded-*`` and RFC 7239 ``Forwarded`` headers, believed only from trusted hops.

The parser is property-tested with plain calls; a live server shows the forwarded address
reaching a DDP method's ``client_address`` and ``ddpctl conns ls``.
"""
import ipaddress
import json

import pytest
from conftest import eventually
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.server.forwarded import (
    PEER_ADDRESS,
    TRUSTED_PEER,
    ProxyPolicy,
    parse_address,
    parse_forwarded,
)
from ddpctl.testing import DDPClient

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
public_ipv4 = ipv4.filter(lambda a: ipaddress.ip_address(a) not in ipaddress.ip_network("10.0.0.0/8"))
any_ip = st.one_of(ipv4, ipv6)
proxy_ip = st.ip_addresses(network="10.0.0.0/8").map(str)
# What a client may put in front of the real entries: anything a header value can hold.
junk = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
spoofed = st.lists(st.one_of(any_ip, junk, st.just("unknown")), max_size=4)


def xff_entry(address, port=None):
    """How proxies write an address in X-Forwarded-For (with a port, sometimes)."""
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def forwarded_node(address, port=None):
    """An RFC 7239 ``for=`` value: IPv6 quoted in brackets, optional port."""
    if ":" in address:
        node = f"[{address}]" + (f":{port}" if port is not None else "")
        return f'"{node}"'
    return f'"{address}:{port}"' if port is not None else address


@settings(deadline=None)
@given(address=any_ip, port=st.one_of(st.none(), st.integers(0, 65535)))
def test_addresses_with_ports_and_brackets_parse_to_the_address(address, port):
    assert parse_address(xff_entry(address, port)) == address
    node = forwarded_node(address, port).strip('"')
    assert parse_address(node) == address


@pytest.mark.parametrize("value", ["unknown", "_hidden", "_A.b-c", "", "1.2.3", "1.2.3.4:x", "[1.2.3.4]",
                                   "[::1", "[::1]x", "::1:99999x", "example.com", "1.2.3.4:123456"])
def test_non_addresses_are_refused(value):
    assert parse_address(value) is None


@settings(deadline=None)
@given(peer=any_ip, spoof=spoofed, proto=junk)
def test_default_trusts_no_header(peer, spoof, proto):
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "HTTP_X_FORWARDED_FOR": ", ".join(spoof),
               "HTTP_X_FORWARDED_PROTO": proto, "HTTP_FORWARDED": f"for={spoof[0] if spoof else 'x'}",
               "HTTP_X_FORWARDED_HOST": "evil.example"}
    ProxyPolicy().apply(environ)
    assert environ["REMOTE_ADDR"] == peer and environ["wsgi.url_scheme"] == "http"
    assert environ[PEER_ADDRESS] == peer and environ[TRUSTED_PEER] is False
    assert "HTTP_X_FORWARDED_HOST" not in environ  # USE_X_FORWARDED_HOST never sees an untrusted one


@settings(deadline=None)
@given(client=any_ip, proxies=st.lists(any_ip, min_size=1, max_size=4), spoof=spoofed,
       ports=st.booleans(), scheme=st.sampled_from(["http", "https", "HTTPS"]))
def test_forwarded_count_finds_the_client_whatever_it_spoofs(client, proxies, spoof, ports, scheme):
    # Chain: client -> proxies[0] -> ... -> proxies[-1] -> server.  Each proxy appends the
    # address it received from; the client wrote its own entries first.
    seen = [client, *proxies[:-1]]
    entries = [*spoof, *(xff_entry(a, 4711 if ports else None) for a in seen)]
    headers = {"HTTP_X_FORWARDED_FOR": ", ".join(entries), "HTTP_X_FORWARDED_PROTO": scheme}
    result = ProxyPolicy.parse(len(proxies)).resolve(proxies[-1], headers)
    assert result.client == client and result.trusted_peer
    assert result.scheme == scheme.lower()
    # Meteor's formula with HTTP_FORWARDED_COUNT when every entry is an address
    if all(parse_address(e) for e in entries):
        assert result.client == parse_address(entries[len(entries) - len(proxies)])


@settings(deadline=None)
@given(client=public_ipv4, proxies=st.lists(proxy_ip, min_size=1, max_size=4), spoof=spoofed)
def test_trusted_networks_walk_back_to_the_first_untrusted_address(client, proxies, spoof):
    entries = [*spoof, client, *proxies[:-1]]
    policy = ProxyPolicy.parse(0, ["10.0.0.0/8", "2001:db8::/32"])
    result = policy.resolve(proxies[-1], {"HTTP_X_FORWARDED_FOR": ",".join(entries)})
    assert result.client == client
    # Not from a trusted address: the peer itself is the client.
    assert policy.resolve(client, {"HTTP_X_FORWARDED_FOR": ",".join(entries)}).client == client
    assert policy.resolve("192.0.2.1", {"HTTP_X_FORWARDED_FOR": "10.9.9.9"}).client == "192.0.2.1"


@settings(deadline=None)
@given(client=any_ip, proxies=st.lists(any_ip, min_size=1, max_size=3), spoof=spoofed,
       ports=st.booleans(), scheme=st.sampled_from(["http", "https"]))
def test_rfc7239_forwarded(client, proxies, spoof, ports, scheme):
    seen = [client, *proxies[:-1]]
    elements = [f"for={forwarded_node(a, 80 if ports else None)};proto={scheme};by=_proxy" for a in seen]
    spoofed_elements = [f"for={json.dumps(s)}" for s in spoof]
    header = ", ".join([*spoofed_elements, *elements])
    policy = ProxyPolicy.parse(len(proxies), header="forwarded")
    result = policy.resolve(proxies[-1], {"HTTP_FORWARDED": header, "HTTP_X_FORWARDED_FOR": "203.0.113.9"})
    assert result.client == client and result.scheme == scheme
    # The other family is the client's own writing (the proxies pass it through): ignored.
    spoofed_xff = {"HTTP_X_FORWARDED_FOR": ", ".join([*(e.split("=", 1)[1] for e in spoofed_elements),
                                                      client])}
    assert ProxyPolicy.parse(len(proxies), header="forwarded").resolve(proxies[-1], spoofed_xff).client \
        == proxies[-1]
    assert ProxyPolicy.parse(1).resolve(proxies[-1], {"HTTP_FORWARDED": "for=198.51.100.1"}).client \
        == proxies[-1]


@settings(deadline=None)
@given(proxy=any_ip, hidden=st.sampled_from(["unknown", "_hidden", "_x.y-z", '"unknown"', "garbage!"]))
def test_unknown_or_obfuscated_identifiers_stop_at_the_proxy(proxy, hidden):
    forwarded = ProxyPolicy.parse(3, header="forwarded")
    assert forwarded.resolve(proxy, {"HTTP_FORWARDED": f"for=1.2.3.4, for={hidden}"}).client == proxy
    assert ProxyPolicy.parse(3).resolve(proxy, {"HTTP_X_FORWARDED_FOR": f"1.2.3.4, {hidden}"}).client == proxy


@settings(deadline=None, max_examples=300)
@given(peer=any_ip, count=st.integers(0, 4), header=st.text(max_size=80), xff=st.text(max_size=80),
       family=st.sampled_from(["x-forwarded", "forwarded"]))
def test_any_header_value_resolves_to_the_peer_or_a_listed_address(peer, count, header, xff, family):
    result = ProxyPolicy.parse(count, ["0.0.0.0/0"] if count == 4 else [], family).resolve(
        peer, {"HTTP_FORWARDED": header, "HTTP_X_FORWARDED_FOR": xff, "HTTP_X_FORWARDED_PROTO": header})
    listed = {parse_address(v) for v in xff.split(",")}
    listed |= {parse_address(e.get("for", "")) for e in parse_forwarded(header) if e}
    assert result.client == peer or (result.client in listed and count > 0)
    assert result.scheme in ("http", "https")


def test_malformed_forwarded_elements_stop_the_walk():
    assert parse_forwarded('for=1.2.3.4;proto=https, for="[::1]:80"') == [
        {"for": "1.2.3.4", "proto": "https"}, {"for": "[::1]:80"}]
    # A client's unterminated quote swallows the proxy's element: nothing is believed.
    policy = ProxyPolicy.parse(1, header="forwarded")
    assert policy.resolve("10.0.0.1", {"HTTP_FORWARDED": 'for="6.6.6.6, for=1.2.3.4'}).client == "10.0.0.1"
    assert parse_forwarded("for=1.2.3.4;for=5.6.7.8") == [None]  # a parameter twice
    assert parse_forwarded("for") == [None]


def test_apply_rewrites_the_environ_once():
    environ = {"REMOTE_ADDR": "10.0.0.1", "wsgi.url_scheme": "http",
               "HTTP_X_FORWARDED_FOR": "198.51.100.7", "HTTP_X_FORWARDED_PROTO": "https",
               "HTTP_X_FORWARDED_HOST": "a.example, app.example.com"}
    policy = ProxyPolicy.parse(1)
    policy.apply(environ)
    assert environ["REMOTE_ADDR"] == "198.51.100.7" and environ["wsgi.url_scheme"] == "https"
    assert environ[PEER_ADDRESS] == "10.0.0.1" and environ[TRUSTED_PEER] is True
    assert environ["HTTP_X_FORWARDED_HOST"] == "app.example.com"  # the trusted hop's own entry
    policy.apply(environ)  # a second call (the WebSocket path, then the router) changes nothing
    assert environ["REMOTE_ADDR"] == "198.51.100.7" and environ[PEER_ADDRESS] == "10.0.0.1"


def test_configuration_values():
    assert ProxyPolicy.from_environment({"HTTP_FORWARDED_COUNT": "2"}).count == 2
    policy = ProxyPolicy.from_environment({"DDPCTL_FORWARDED_COUNT": "1",
                                           "DDPCTL_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::1,[::1]"})
    assert policy.count == 1 and [str(n) for n in policy.networks] == ["10.0.0.0/8", "2001:db8::1/128",
                                                                       "::1/128"]
    for bad in (["nonsense"], ["10.0.0.0/99"]):
        with pytest.raises(ValueError, match="invalid trusted proxy"):
            ProxyPolicy.parse(0, bad)
    with pytest.raises(ValueError, match="invalid forwarded count"):
        ProxyPolicy.parse("-1")
    with pytest.raises(ValueError, match="invalid forwarded header"):
        ProxyPolicy.parse(1, header="x-real-ip")
    assert ProxyPolicy.from_environment({"DDPCTL_FORWARDED_HEADER": "Forwarded"}).header == "forwarded"
    # IPv4-mapped IPv6 peers (a dual-stack socket) match IPv4 networks.
    assert ProxyPolicy.parse(0, ["127.0.0.0/8"]).resolve(
        "::ffff:127.0.0.1", {"HTTP_X_FORWARDED_FOR": "192.0.2.5"}).client == "192.0.2.5"


# -- live ------------------------------------------------------------------------------------


def whoami(url, headers):
    with DDPClient(url, header=headers) as client:
        client.connect()
        return client.call("whoami"), client


def test_forwarded_address_reaches_methods_and_conns_ls(start_server, ddpctl):
    spoof = ["X-Forwarded-For: 6.6.6.6, 203.0.113.7", "X-Forwarded-Proto: https"]
    plain = start_server()
    assert whoami(plain.ws_url, spoof)[0]["address"] == "127.0.0.1"  # trusts none by default
    behind = start_server("--forwarded-count", "1")
    me, _ = whoami(behind.ws_url, spoof)
    assert me["address"] == "203.0.113.7"
    rfc7239 = start_server("--forwarded-count", "1", "--forwarded-header", "forwarded")
    assert whoami(rfc7239.sockjs_url, ["Forwarded: for=6.6.6.6, for=\"[2001:db8::5]:443\""])[0]["address"] \
        == "2001:db8::5"
    listed = start_server(env={"DDPCTL_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"})
    with DDPClient(listed.ws_url, header=["X-Forwarded-For: 6.6.6.6, 198.51.100.4, 10.1.2.3"]) as client:
        session = client.connect()
        assert client.call("whoami")["address"] == "198.51.100.4"

        def listed_address():
            rows = json.loads(ddpctl("conns", "ls", "--json").stdout)
            return next((r["remote_address"] for r in rows if session in json.dumps(r)), None)

        assert eventually(listed_address) == "198.51.100.4"
