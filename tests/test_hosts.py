"""Hosts (ddpctl.server.hosts): Django's ALLOWED_HOSTS on every path, and ROOT_URL from
options or named allowed hosts only.

The policy is compared with Django's own ``HttpRequest.get_host`` over generated Host
values; a live server answers 400 to a bad Host on each kind of path.
"""
import urllib.error
import urllib.request

import pytest
import websocket
from conftest import SERVER_ARGS
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_meteor import CHROME, make_bundle, runtime_config_of

from ddpctl.meteor.bundle import load_bundle
from ddpctl.server.forwarded import ProxyPolicy
from ddpctl.server.hosts import HostPolicy
from ddpctl.testing import DDPClient, LiveServer

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domains = st.builds(".".join, st.lists(labels, min_size=1, max_size=3))
ports = st.one_of(st.just(""), st.integers(0, 70000).map(lambda p: f":{p}"), st.just(":x"))
hosts = st.one_of(
    st.builds(lambda d, p: d + p, domains, ports),
    st.builds(lambda d, p: d + ".example.com" + p, domains, ports),
    st.sampled_from(["example.com", "EXAMPLE.com", "example.com.", "localhost", "sub.localhost",
                     "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:80", "[::1", "::1", "",
                     "example.com:80:80", "exa mple.com", "example.com/x", "ex@mple.com",
                     "example.com\x00", "évil.example", "-bad.example.com"]),
    st.text(max_size=20),
)
allowed_lists = st.sampled_from([
    [], ["example.com"], [".example.com"], ["*"], ["example.com", "*"], ["localhost", "127.0.0.1", "[::1]"],
    [".example.com", "other.test"],
])


def django_allows(host, allowed, debug, forwarded_host=None, use_forwarded=False):
    request = HttpRequest()
    request.META = {"HTTP_HOST": host, "SERVER_NAME": "server.internal", "SERVER_PORT": "8000"}
    if forwarded_host is not None:
        request.META["HTTP_X_FORWARDED_HOST"] = forwarded_host
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=debug, USE_X_FORWARDED_HOST=use_forwarded):
        try:
            request.get_host()
            return True
        except DisallowedHost:
            return False


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(host=hosts, allowed=allowed_lists, debug=st.booleans())
def test_host_policy_agrees_with_djangos_get_host(host, allowed, debug):
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=debug, USE_X_FORWARDED_HOST=False):
        policy = HostPolicy.from_settings()
    environ = {"HTTP_HOST": host, "SERVER_NAME": "server.internal", "SERVER_PORT": "8000"}
    assert policy.allows(environ) == django_allows(host, allowed, debug)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(host=hosts, forwarded=hosts, trusted=st.booleans())
def test_x_forwarded_host_counts_only_from_a_trusted_proxy(host, forwarded, trusted):
    allowed = ["example.com", ".example.com"]
    with override_settings(ALLOWED_HOSTS=allowed, USE_X_FORWARDED_HOST=True):
        policy = HostPolicy.from_settings()
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_HOST": host, "HTTP_X_FORWARDED_HOST": forwarded,
               "SERVER_NAME": "server.internal", "SERVER_PORT": "8000"}
    ProxyPolicy.parse(1 if trusted else 0).apply(environ)
    entries = [e.strip() for e in forwarded.split(",") if e.strip()]
    if trusted and entries:  # the proxy's own (last) entry, as Django's USE_X_FORWARDED_HOST reads it
        expected = django_allows(host, allowed, False, entries[-1], True)
    else:  # from an untrusted peer (or empty): only Host counts
        expected = django_allows(host, allowed, False)
    assert policy.allows(environ) == expected


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(host=hosts, allowed=allowed_lists, configured=st.one_of(st.none(), st.just("https://app.test/")))
def test_root_url_never_comes_from_a_host_only_the_wildcard_allowed(host, allowed, configured):
    policy = HostPolicy(allowed)
    environ = {"HTTP_HOST": host, "SERVER_NAME": "server.internal", "SERVER_PORT": "8000",
               "wsgi.url_scheme": "http"}
    url = policy.root_url(environ, configured)
    if configured:
        assert url == configured
    elif policy.named(host):
        assert url == f"http://{host}/"
    else:
        assert url == "http://server.internal:8000/"


# -- live: 400 on every path ----------------------------------------------------------------


def http(url, host=None, method="GET"):
    headers = {"User-Agent": CHROME, **({"Host": host} if host else {})}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory, live_database_url):
    directory = make_bundle(tmp_path_factory.mktemp("hosts") / "bundle")
    with LiveServer([*SERVER_ARGS, "--meteor-bundle", str(directory)],
                    env={"DATABASE_URL": live_database_url}) as server:
        server.bundle_dir = directory
        yield server


def paths(site):
    program = load_bundle(site.bundle_dir).programs["web.browser"]
    return ["/", "/some/route", "/django/", program.js[0]["url"], "/favicon.ico", "/meteor_runtime_config.js",
            "/__browser/manifest.json", "/sockjs/info", "/sockjs", "/websocket", "/static/admin/css/base.css",
            "/admin/login/"]


@pytest.mark.parametrize("bad", ["evil.example", "evil.example:80", "localhost.evil.example", "[::2]", "a b"])
def test_a_bad_host_gets_400_on_every_path(site, bad):
    for path in paths(site):
        status, body = http(site.url + path, host=bad)
        assert status == 400, (path, status, body[:100])
    for path in ("/websocket", "/sockjs/123/abcdef/websocket"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{site.port}{path}", host=bad, timeout=10)
        assert refused.value.status_code == 400


def test_a_good_host_is_served_and_becomes_root_url(site):
    for host in (f"127.0.0.1:{site.port}", f"localhost:{site.port}", "localhost"):
        statuses = {path: http(site.url + path, host=host)[0] for path in paths(site)}
        assert all(status != 400 for path, status in statuses.items() if path != "/websocket"), statuses
        config = runtime_config_of(http(site.url + "/", host=host)[1].decode())
        assert config["ROOT_URL"] == f"http://{host}/" and "DDP_DEFAULT_CONNECTION_URL" not in config
    assert http(site.url + "/static/admin/css/base.css", host="localhost")[0] == 200
    for url in (site.ws_url, site.sockjs_url):
        with DDPClient(url, host=f"localhost:{site.port}") as client:
            assert client.connect()


def test_wildcard_hosts_do_not_become_root_url(start_server, tmp_path):
    directory = make_bundle(tmp_path / "bundle")
    server = start_server("--meteor-bundle", str(directory), env={"DJANGO_ALLOWED_HOSTS": "*"})
    status, body = http(server.url + "/", host="attacker.example")
    assert status == 200
    assert "attacker" not in runtime_config_of(body.decode())["ROOT_URL"]
    status, body = http(server.url + "/meteor_runtime_config.js", host="attacker.example")
    assert status == 200 and b"attacker" not in body
    configured = start_server("--meteor-bundle", str(directory), "--root-url", "https://app.example.com/",
                              env={"DJANGO_ALLOWED_HOSTS": "*"})
    config = runtime_config_of(http(configured.url + "/", host="attacker.example")[1].decode())
    assert config["ROOT_URL"] == "https://app.example.com/"
