"""Origin checks on /websocket and /sockjs: the policy against Django's own host and CSRF
origin checks (property-based), and live servers refusing cross-origin pages with 403."""
import logging
import urllib.error
import urllib.request

import pytest
import websocket
from django.core.exceptions import DisallowedHost
from django.middleware.csrf import CsrfViewMiddleware
from django.test import RequestFactory, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.origins import OriginPolicy, RefusalLog, parse_origin_list
from ddpctl.testing import DDPClient

# -- the policy, pure ------------------------------------------------------------------

LABELS = st.sampled_from(["example", "shop", "a", "b", "localhost", "xn--bcher-kva", "co"])
DOMAINS = st.lists(LABELS, min_size=1, max_size=3).map(".".join)
IPS = st.sampled_from(["127.0.0.1", "10.0.0.5", "[::1]", "[2001:db8::1]"])
HOSTNAMES = st.one_of(DOMAINS, IPS)
SCHEMES = st.sampled_from(["http", "https"])
PORTS = st.one_of(st.none(), st.sampled_from([80, 443, 3000, 8000]))


@st.composite
def origins(draw, hostnames=HOSTNAMES):
    port = draw(PORTS)
    return f"{draw(SCHEMES)}://{draw(hostnames)}" + ("" if port is None else f":{port}")


HOST_PATTERNS = st.one_of(DOMAINS, DOMAINS.map(lambda d: "." + d), IPS, st.just("*"))


def django_serves_host(host, allowed_hosts):
    """Would Django answer a request with this Host header (``ALLOWED_HOSTS``)?"""
    with override_settings(ALLOWED_HOSTS=allowed_hosts, DEBUG=False):
        try:
            RequestFactory().get("/", HTTP_HOST=host).get_host()
        except DisallowedHost:
            return False
        return True


@settings(max_examples=300, deadline=None)
@given(allowed_hosts=st.lists(HOST_PATTERNS, max_size=4), origin=origins())
def test_default_policy_allows_exactly_the_origins_whose_host_django_serves(allowed_hosts, origin):
    policy = OriginPolicy(None, allowed_hosts)
    netloc = origin.split("://", 1)[1]
    assert policy.allows(origin, None) == django_serves_host(netloc, allowed_hosts)
    # A page from a host Django serves is allowed whatever host the request names.
    assert policy.allows(origin, "ddp.invalid") == django_serves_host(netloc, allowed_hosts)


TRUSTED = st.one_of(origins(DOMAINS), st.builds(lambda s, d: f"{s}://*.{d}", SCHEMES, DOMAINS))


@settings(max_examples=300, deadline=None)
@given(trusted=st.lists(TRUSTED, max_size=4), origin=origins())
def test_csrf_trusted_origins_match_as_djangos_csrf_check(trusted, origin):
    """With a site host that is none of the origins', the policy agrees with Django's CSRF
    origin check (CsrfViewMiddleware) on every origin."""
    policy = OriginPolicy(None, ["ddp.invalid"], trusted)
    with override_settings(ALLOWED_HOSTS=["ddp.invalid"], CSRF_TRUSTED_ORIGINS=trusted):
        request = RequestFactory().post("/", HTTP_HOST="ddp.invalid", HTTP_ORIGIN=origin)
        django_says = CsrfViewMiddleware(lambda r: None)._origin_verified(request)
    assert policy.allows(origin, "ddp.invalid") == django_says


@settings(max_examples=200, deadline=None)
@given(explicit=st.one_of(st.none(), st.lists(origins(DOMAINS), max_size=3)),
       allowed_hosts=st.lists(HOST_PATTERNS, max_size=3), host=st.one_of(st.none(), HOSTNAMES))
def test_requests_without_origin_are_always_allowed(explicit, allowed_hosts, host):
    assert OriginPolicy(explicit, allowed_hosts).allows(None, host)


@settings(max_examples=300, deadline=None)
@given(hostname=HOSTNAMES, scheme=SCHEMES, port=PORTS, other_port=PORTS, explicit=st.booleans())
def test_same_origin_pages_are_allowed_when_django_serves_the_host(hostname, scheme, port, other_port,
                                                                 explicit):
    """Origin equal to the request's Host: allowed (also with an explicit list that does not
    name it), if Django serves that host; another port of the host is not the same origin."""
    default = {"http": 80, "https": 443}[scheme]
    host = hostname + ("" if port is None else f":{port}")
    origin = f"{scheme}://{host}"
    policy = OriginPolicy(["https://elsewhere.test"] if explicit else None, [hostname])
    assert policy.allows(origin, host)
    assert not OriginPolicy(["https://elsewhere.test"], ["ddp.invalid"]).allows(origin, host)
    if explicit and (other_port or default) != (port or default):
        moved = f"{scheme}://{hostname}" + ("" if other_port is None else f":{other_port}")
        assert not policy.allows(moved, host)


def test_explicit_lists():
    policy = OriginPolicy(["https://app.example.com", "https://*.example.org", "null"], ["example.com"])
    assert policy.allows("https://app.example.com", "api.example.com")
    assert policy.allows("https://x.example.org", None) and policy.allows("https://a.b.example.org", None)
    assert policy.allows("null", None)
    # The explicit list replaces ALLOWED_HOSTS as a source of origins ...
    assert not policy.allows("https://example.com", "api.example.com")
    assert not policy.allows("http://app.example.com", None)  # another scheme
    assert not policy.allows("https://x.example.org:8443", None)  # another port (as Django)
    # ... except the request's own host.
    assert policy.allows("https://example.com", "example.com")
    assert OriginPolicy(["*"], []).allows("https://anything.test", None)
    assert OriginPolicy(["*"], []).allows_any and not policy.allows_any
    assert OriginPolicy(None, ["*"]).allows_any
    assert not OriginPolicy(None, ["*"]).allows("null", None)  # 'null' only when listed
    assert not OriginPolicy(None, ["*"]).allows("not an origin", None)


@pytest.mark.parametrize("bad", ["example.com", "https://example.com/path", "https://example.com?x",
                                 "https://a.*.example.com", "https://*", "https://user@example.com",
                                 "https://example.com:99999", "", "*.example.com", "https://**.example.com"])
def test_invalid_explicit_entries_are_rejected(bad):
    with pytest.raises(ValueError, match="invalid allowed origin"):
        parse_origin_list([bad])


def test_settings_and_debug_defaults():
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[], CSRF_TRUSTED_ORIGINS=[]):
        policy = OriginPolicy.from_settings()
        assert policy.allows("http://localhost:3000", None) and policy.allows("http://app.localhost", None)
        assert not policy.allows("http://example.com", None)
    with override_settings(DEBUG=False, ALLOWED_HOSTS=[], DDPCTL_ALLOWED_ORIGINS=["https://a.test"]):
        policy = OriginPolicy.from_settings()
        assert policy.allows("https://a.test", None) and not policy.allows("http://localhost", None)
        # The option wins over the setting.
        assert OriginPolicy.from_settings(["https://b.test"]).allows("https://b.test", None)
        assert not OriginPolicy.from_settings(["https://b.test"]).allows("https://a.test", None)
    with override_settings(DDPCTL_ALLOWED_ORIGINS="https://a.test"), pytest.raises(ValueError):
        OriginPolicy.from_settings()


def test_forwarded_host_counts_only_when_django_uses_it():
    environ = {"HTTP_ORIGIN": "https://public.example", "HTTP_HOST": "backend:8000",
               "HTTP_X_FORWARDED_HOST": "public.example", "PATH_INFO": "/websocket"}
    assert OriginPolicy(["https://other.test"], ["public.example"], use_x_forwarded_host=True).check(environ)
    assert not OriginPolicy(["https://other.test"], ["public.example"]).check(environ)


def test_refusals_are_logged_at_most_once_per_interval(caplog):
    now = [100.0]
    log = RefusalLog(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ddpctl.origins"):
        for _ in range(50):
            log.refused("https://evil.test", "/websocket", "10.0.0.1")
        now[0] += 10.0
        log.refused("https://evil2.test", "/sockjs/info", "10.0.0.2")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and log.total == 51
    assert "'https://evil.test'" in lines[0] and "more refused" not in lines[0]
    assert "'https://evil2.test'" in lines[1] and "49 more refused" in lines[1]


# -- live servers ----------------------------------------------------------------------

def connect(url, **options):
    """A DDP client that completed the handshake, or the refusal's HTTP status."""
    try:
        client = DDPClient(url, **options)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    with client:
        assert len(client.connect()) == 17
        assert client.call("echo", 1) == [1]
    return "connected"


def http_status(url, origin=None):
    request = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.parametrize("transport", ["raw", "sockjs", "raw under /sockjs"])
def test_cross_origin_websockets_are_refused_same_origin_and_originless_accepted(server, transport):
    url = {"raw": server.ws_url, "sockjs": server.sockjs_url,
           "raw under /sockjs": f"ws://127.0.0.1:{server.port}/sockjs/websocket"}[transport]
    assert connect(url, origin="https://evil.example") == 403
    assert connect(url, origin="http://127.0.0.1.evil.example") == 403
    assert connect(url, origin="null") == 403
    assert connect(url, origin=f"http://127.0.0.1:{server.port}") == "connected"  # same origin
    assert connect(url, origin="http://localhost:3000") == "connected"  # ALLOWED_HOSTS: localhost
    assert connect(url, suppress_origin=True) == "connected"  # a native client: no Origin
    assert "refused a DDP request from origin 'https://evil.example'" in server.output()


def test_sockjs_http_endpoints_check_the_origin(server):
    status, headers = http_status(server.url + "/sockjs/info", "https://evil.example")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    same = f"http://127.0.0.1:{server.port}"
    status, headers = http_status(server.url + "/sockjs/info", same)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == same
    assert http_status(server.url + "/sockjs/info")[0] == 200
    assert http_status(server.url + "/sockjs/000/session/xhr", "https://evil.example")[0] == 403
    assert http_status(server.url + "/sockjs", "https://evil.example")[0] == 403
    # Django's own pages are not DDP: untouched.
    assert http_status(server.url + "/django/", "https://evil.example")[0] == 200


def test_allowed_origin_option_replaces_the_defaults(start_server):
    live = start_server("--allowed-origin", "https://app.example.com",
                        env={"DDPCTL_ALLOWED_ORIGINS": "https://ignored.example"})  # the option wins
    for url in (live.ws_url, live.sockjs_url):
        assert connect(url, origin="https://app.example.com") == "connected"
        assert connect(url, origin="https://ignored.example") == 403
        assert connect(url, origin="http://localhost:3000") == 403  # ALLOWED_HOSTS no longer counts
        assert connect(url, origin=f"http://127.0.0.1:{live.port}") == "connected"  # same origin still
        assert connect(url, suppress_origin=True) == "connected"


def test_allowed_origins_from_the_environment_and_allowed_hosts_wildcards(start_server):
    live = start_server(env={"DDPCTL_ALLOWED_ORIGINS": "https://*.apps.test http://localhost:3000"})
    assert connect(live.ws_url, origin="https://one.apps.test") == "connected"
    assert connect(live.ws_url, origin="http://localhost:3000") == "connected"
    assert connect(live.ws_url, origin="https://apps.test.evil") == 403
    wild = start_server(env={"DJANGO_ALLOWED_HOSTS": ".example.com 127.0.0.1"})
    assert connect(wild.ws_url, origin="https://shop.example.com") == "connected"
    assert connect(wild.ws_url, origin="http://example.com:8080") == "connected"
    assert connect(wild.ws_url, origin="https://example.com.evil.org") == 403
    assert connect(wild.ws_url, origin="http://localhost:3000") == 403
    anything = start_server(env={"DJANGO_ALLOWED_HOSTS": "*"})
    assert connect(anything.sockjs_url, origin="https://any.where") == "connected"


def test_an_invalid_allowed_origin_is_a_usage_error(start_server):
    from ddpctl.testing import ServerDidNotStart

    with pytest.raises(ServerDidNotStart, match="invalid allowed origin 'example.com'"):
        start_server("--allowed-origin", "example.com")



# -- system checks ---------------------------------------------------------------------

def check_ids(**overrides):
    from ddpctl.checks import check_origins_and_session_login

    with override_settings(**overrides):
        return [problem.id for problem in check_origins_and_session_login()]


def test_system_checks_for_origins_and_session_login():
    assert check_ids() == []
    assert check_ids(DDPCTL_ALLOWED_ORIGINS=["example.com"]) == ["ddpctl.E011"]
    assert check_ids(DDPCTL_ALLOWED_ORIGINS="https://a.test") == ["ddpctl.E011"]
    assert check_ids(DDPCTL_SESSION_LOGIN="yes") == ["ddpctl.E012"]
    assert check_ids(DDPCTL_SESSION_LOGIN=True) == []
    assert check_ids(DDPCTL_SESSION_LOGIN=True, ALLOWED_HOSTS=["*"]) == ["ddpctl.W011"]
    assert check_ids(DDPCTL_SESSION_LOGIN=True, DDPCTL_ALLOWED_ORIGINS=["*"]) == ["ddpctl.W011"]
    assert check_ids(DDPCTL_SESSION_LOGIN=False, DDPCTL_ALLOWED_ORIGINS=["*"]) == []
    from django.conf import settings as django_settings

    without_sessions = [a for a in django_settings.INSTALLED_APPS if a != "django.contrib.sessions"]
    assert check_ids(DDPCTL_SESSION_LOGIN=True, INSTALLED_APPS=without_sessions) == ["ddpctl.E013"]
    assert check_ids(DDPCTL_SESSION_LOGIN=True, INSTALLED_APPS=without_sessions,
                     SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies") == []
