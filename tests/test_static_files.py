"""Bundle files served as Meteor's webapp serves them: byte ranges, any file name, lookup
across architectures, the manifest as JSON, nothing outside the bundle (symlinks included),
gzip/brotli; and Django's static files under ``ddpctl serve`` with DEBUG.

Most tests call :class:`ddpctl.meteor.app.MeteorApp` as a plain WSGI app (fast); a few go
through a live ``ddpctl serve``.
"""
import gzip
import io
import json
import os
import urllib.error
import urllib.request
from urllib.parse import quote

import brotli
import pytest
from conftest import SERVER_ARGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_meteor import BODY, CHROME, HEAD, IE11

from ddpctl.meteor.app import FileSlice, MeteorApp, MeteorOptions
from ddpctl.meteor.bundle import load_bundle
from ddpctl.meteor.byte_ranges import parse_range
from ddpctl.meteor.compression import CompressedFiles
from ddpctl.meteor.writer import write_bundle
from ddpctl.testing import LiveServer

VIDEO = bytes(range(256)) * 40  # 10 KiB, binary: never compressed
TEXT = ("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400))).encode()
NAMES = {"café au lait.txt": b"\xe2\x98\x95 coffee", "dir with space/naïve+plus.txt": b"plus",
         "日本語/ファイル.txt": b"nihongo", "percent%20literal.txt": b"literal"}


def make_bundle(path, assets):
    return write_bundle(path, js=b"console.log('modern')", legacy_js=b"console.log('legacy')",
                        css=b"body{color:red}", head=HEAD, body=BODY, assets=assets)


def django_stand_in(environ, start_response):
    """Plays Django's part in front of which MeteorApp sits: answers its own URLs."""
    body = b"django " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    directory = make_bundle(tmp_path_factory.mktemp("static") / "bundle",
                            {"video.mp4": VIDEO, "big.txt": TEXT, "small.txt": b"tiny", **NAMES})
    return directory


def make_app(directory, **options):
    bundle = load_bundle(directory)
    return MeteorApp(lambda: bundle, django_stand_in, lambda path: path.startswith("/django/"),
                     MeteorOptions(**options)), bundle


@pytest.fixture(scope="module")
def app(bundle_dir):
    return make_app(bundle_dir)


def call(app, url, method="GET", headers=None, environ=None):
    """(status code, headers, body) of a request; ``url`` as sent (percent-encoded)."""
    path, _, query = url.partition("?")
    raw = urllib.request.unquote_to_bytes(path)
    env = {"REQUEST_METHOD": method, "PATH_INFO": raw.decode("latin-1"), "QUERY_STRING": query,
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
           "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "HTTP_USER_AGENT": CHROME,
           **(environ or {})}
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    got = {}

    def start_response(status, response_headers, exc_info=None):
        got["status"] = int(status.split()[0])
        got["headers"] = dict(response_headers)

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return got["status"], got["headers"], body


def url_of(name):
    return quote("/" + name)


# -- ranges ---------------------------------------------------------------------------------


def covered(size, specs):
    """The byte offsets a list of (start, end) specs asks for, on a file of ``size`` bytes."""
    offsets = set()
    for start, end in specs:
        if start is None and end is None:
            continue
        if start is None:  # suffix
            first, last = max(size - end, 0), size - 1
        else:
            first, last = start, size - 1 if end is None else min(end, size - 1)
        offsets.update(range(first, last + 1))
    return offsets


def spec_text(start, end):
    return f"{'' if start is None else start}-{'' if end is None else end}"


bound = st.one_of(st.none(), st.integers(0, len(VIDEO) + 50))
specs = st.lists(st.tuples(bound, bound), min_size=1, max_size=4)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranges=specs, head=st.booleans())
def test_ranges_against_the_files_bytes(app, ranges, head):
    header = "bytes=" + ",".join(spec_text(s, e) for s, e in ranges)
    status, headers, body = call(app[0], "/video.mp4", "HEAD" if head else "GET", {"Range": header})
    wanted = covered(len(VIDEO), [(s, e) for s, e in ranges if s is None or e is None or s <= e])
    assert headers["Accept-Ranges"] == "bytes"
    if not wanted:
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(VIDEO)}"
    elif max(wanted) - min(wanted) + 1 == len(wanted):  # one contiguous block after combining
        first, last = min(wanted), max(wanted)
        assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{len(VIDEO)}"
        assert int(headers["Content-Length"]) == last - first + 1
        assert body == (b"" if head else VIDEO[first:last + 1])
    else:  # several ranges: the whole file, as send does
        assert status == 200 and body == (b"" if head else VIDEO)


def test_range_examples(app):
    app = app[0]
    status, headers, body = call(app, "/video.mp4", headers={"Range": "bytes=0-1"})  # what Safari asks first
    assert status == 206 and body == VIDEO[:2] and headers["Content-Range"] == f"bytes 0-1/{len(VIDEO)}"
    assert call(app, "/video.mp4", headers={"Range": "bytes=-20000"})[2] == VIDEO  # longer suffix: all
    assert call(app, "/video.mp4", headers={"Range": f"bytes={len(VIDEO)}-"})[0] == 416
    assert call(app, "/video.mp4", headers={"Range": "bytes=-0"})[0] == 416
    for ignored in ("items=0-1", "bytes 0-1", "0-1", ""):
        assert call(app, "/video.mp4", headers={"Range": ignored})[:3:2] == (200, VIDEO)
    assert parse_range(10, "bytes=0-1,2-3,8-") == [(0, 3), (8, 9)]
    assert parse_range(10, "bytes=7-8,0-1,1-4") == [(7, 8), (0, 4)]  # combined, in first-seen order
    assert parse_range(10, "bytes=5-6,0-1,1-4") == [(0, 6)]  # adjacent ranges join


def test_if_range_and_conditional_requests(app):
    app, _ = app
    _, headers, _ = call(app, "/video.mp4")
    etag = headers["ETag"]
    assert call(app, "/video.mp4", headers={"Range": "bytes=0-9", "If-Range": etag})[0] == 206
    assert call(app, "/video.mp4", headers={"Range": "bytes=0-9", "If-Range": '"other"'})[0] == 200
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # no Last-Modified (as Meteor): a date never holds
    assert call(app, "/video.mp4", headers={"Range": "bytes=0-9", "If-Range": date})[0] == 200
    assert call(app, "/video.mp4", headers={"If-None-Match": etag})[0] == 304
    assert call(app, "/video.mp4", headers={"If-None-Match": f'"x", W/{etag}'})[0] == 304
    assert call(app, "/video.mp4", headers={"If-None-Match": "*"})[0] == 304
    assert call(app, "/video.mp4", headers={"If-None-Match": '"x"'})[0] == 200
    assert call(app, "/video.mp4", headers={"If-Match": '"x"'})[0] == 412
    assert call(app, "/video.mp4", headers={"If-Match": etag})[0] == 200


# -- names, architectures, manifest -----------------------------------------------------------


def test_any_file_name(app):
    app, _ = app
    for name, contents in NAMES.items():
        status, headers, body = call(app, url_of(name))
        assert (status, body) == (200, contents), name
    assert call(app, "/caf%C3%A9 au lait.txt")[2] == NAMES["café au lait.txt"]  # raw space
    # Not UTF-8: not a bundle file (webapp's decodeURIComponent fails), the app's HTML.
    status, headers, _ = call(app, "/caf%E9%20au%20lait.txt")
    assert status == 200 and headers["Content-Type"].startswith("text/html")


def test_lookup_across_architectures(app):
    app, bundle = app
    modern = bundle.programs["web.browser"].js[0]["url"]
    legacy = bundle.programs["web.browser.legacy"].js[0]["url"]
    assert call(app, legacy, headers={"User-Agent": CHROME})[2] == b"console.log('legacy')"
    assert call(app, modern, headers={"User-Agent": IE11})[2] == b"console.log('modern')"
    assert call(app, "/__browser.legacy" + modern)[2] == b"console.log('modern')"
    assert call(app, "/__browser" + legacy, headers={"User-Agent": IE11})[2] == b"console.log('legacy')"


@pytest.mark.parametrize("agent", [CHROME, IE11, ""])
def test_manifests_are_json(app, agent):
    app, bundle = app
    for arch, program in bundle.programs.items():
        status, headers, body = call(app, f"/__{arch[4:]}/manifest.json", headers={"User-Agent": agent})
        assert status == 200 and headers["Content-Type"] == "application/json; charset=UTF-8"
        manifest = json.loads(body)
        assert manifest["format"] == "web-program-pre1" and manifest["manifest"] == program.manifest
        assert manifest["version"] == program.versions["version"]
    assert call(app, "/__cordova/manifest.json")[1]["Content-Type"].startswith("text/html")  # no such program


# -- nothing outside the bundle ---------------------------------------------------------------


def test_symlinks_out_of_the_bundle_are_refused(tmp_path, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:secret")
    directory = make_bundle(tmp_path / "bundle", {"inside.txt": b"in", "linked.txt": b"placeholder",
                                                  "later.txt": b"later", "alias.txt": b"x"})
    app_dir = directory / "programs" / "web.browser" / "app"
    (app_dir / "linked.txt").unlink()
    (app_dir / "linked.txt").symlink_to(secret)  # a link out, there at load time
    (app_dir / "alias.txt").unlink()
    (app_dir / "alias.txt").symlink_to(app_dir / "inside.txt")  # a link inside: fine
    app, bundle = make_app(directory)
    assert "/linked.txt" not in bundle.programs["web.browser"].files
    assert "link out of the program directory" in caplog.text
    (app_dir / "later.txt").unlink()
    (app_dir / "later.txt").symlink_to(secret)  # replaced by a link after the bundle was read
    for url in ("/linked.txt", "/later.txt", "/__browser/linked.txt", "/..%2f..%2f..%2fsecret.txt",
                "/%2e%2e/%2e%2e/secret.txt", "/..\\..\\secret.txt", "/inside.txt%00", "/inside.txt\x00"):
        status, _, body = call(app, url)
        assert b"secret" not in body and status in (200, 404), url
    assert call(app, "/later.txt")[0] == 404
    assert call(app, "/alias.txt")[2] == b"in" and call(app, "/inside.txt")[2] == b"in"


# -- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "expected"), [
    ("gzip", "gzip"), ("gzip, deflate, br", "br"), ("br;q=0.5, gzip", "gzip"), ("*", "br"),
    ("gzip;q=0, br;q=0", None), ("identity", None), ("", None), ("deflate", None),
    ("br;q=0.1, identity;q=0.5", None), ("x-gzip", "gzip"), ("GZIP;Q=1", "gzip"), ("gzip;q=bogus", None),
])
def test_compression_negotiation(app, accept, expected):
    app, _ = app
    status, headers, body = call(app, "/big.txt", headers={"Accept-Encoding": accept})
    assert status == 200 and headers.get("Content-Encoding") == expected
    assert "Accept-Encoding" in headers["Vary"]
    decoded = {"gzip": gzip.decompress, "br": brotli.decompress, None: lambda b: b}[expected](body)
    assert decoded == TEXT
    if expected:
        assert int(headers["Content-Length"]) == len(body) < len(TEXT)


def test_what_is_never_compressed(app):
    app, bundle = app
    gz = {"Accept-Encoding": "gzip, br"}
    _, headers, body = call(app, "/video.mp4", headers=gz)  # not a compressible type
    assert "Content-Encoding" not in headers and body == VIDEO and "Vary" not in headers
    _, headers, body = call(app, "/small.txt", headers=gz)  # under 1 KiB
    assert "Content-Encoding" not in headers and "Accept-Encoding" in headers["Vary"]
    _, headers, body = call(app, "/big.txt", "HEAD", headers=gz)
    assert "Content-Encoding" not in headers and body == b""
    status, headers, body = call(app, "/big.txt", headers={**gz, "Range": "bytes=10-19"})
    assert status == 206 and "Content-Encoding" not in headers and body == TEXT[10:20]
    _, headers, body = call(app, "/big.txt", headers={**gz, "X-No-Compression": "1"})
    assert "Content-Encoding" not in headers and body == TEXT



def test_generated_responses_are_compressed_too(app):
    # The app's HTML, the runtime config and the manifests (when over 1 KiB).
    app, _ = app
    compressed = set()
    for url in ("/", "/some/route", "/meteor_runtime_config.js", "/__browser/manifest.json"):
        _, plain_headers, plain = call(app, url, headers={"Accept-Encoding": "identity"})
        _, headers, body = call(app, url, headers={"Accept-Encoding": "gzip"})
        assert "Accept-Encoding" in headers["Vary"] and "Accept-Encoding" in plain_headers["Vary"]
        assert (gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body) == plain, url
        assert headers.get("Content-Encoding") == ("gzip" if len(plain) >= 1024 else None), url
        if headers.get("Content-Encoding"):
            compressed.add(url)
    assert "/__browser/manifest.json" in compressed


def test_compressed_files_are_cached_bounded_and_streamed(tmp_path):
    files = []
    for i in range(12):
        path = tmp_path / f"f{i}.txt"
        path.write_bytes(os.urandom(3000).hex().encode())  # 6000 bytes, compressible to ~3000
        files.append(path)
    cache = CompressedFiles(cache_bytes=10_000, file_limit=6000)
    for path in files:
        stat = path.stat()
        out = cache.body(path, stat.st_size, stat.st_mtime_ns, "gzip")
        assert isinstance(out, bytes) and gzip.decompress(out) == path.read_bytes()
        assert cache.cached_bytes <= 10_000
    big = tmp_path / "big.txt"
    big.write_bytes(TEXT * 3)
    stream = cache.body(big, big.stat().st_size, big.stat().st_mtime_ns, "br")
    assert not isinstance(stream, bytes) and brotli.decompress(b"".join(stream)) == TEXT * 3
    # A new version of a file (size or mtime) is compressed again, never served stale.
    files[0].write_bytes(b"changed " * 200)
    stat = files[0].stat()
    assert gzip.decompress(cache.body(files[0], stat.st_size, stat.st_mtime_ns, "gzip")) == b"changed " * 200


def test_file_bodies_go_through_wsgi_file_wrapper(app):
    app, _ = app
    wrapped = []

    def file_wrapper(filelike, block_size):
        wrapped.append((filelike, block_size))
        return iter(lambda: filelike.read(block_size), b"")

    status, _, body = call(app, "/video.mp4", headers={"Range": "bytes=100-299"},
                           environ={"wsgi.file_wrapper": file_wrapper})
    assert status == 206 and body == VIDEO[100:300]
    assert isinstance(wrapped[0][0], FileSlice)
    wrapped[0][0].close()
    _, _, body = call(app, "/video.mp4", environ={"wsgi.file_wrapper": file_wrapper})
    assert body == VIDEO and len(wrapped) == 2
    wrapped[1][0].close()


# -- live -------------------------------------------------------------------------------------


def http(url, method="GET", headers=None):
    request = urllib.request.Request(url, method=method, headers={"User-Agent": CHROME, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def live(bundle_dir, live_database_url):
    with LiveServer([*SERVER_ARGS, "--meteor-bundle", str(bundle_dir)],
                    env={"DATABASE_URL": live_database_url}) as server:
        yield server


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ranges=specs)
def test_live_ranges_against_the_files_bytes(live, ranges):
    header = "bytes=" + ",".join(spec_text(s, e) for s, e in ranges)
    status, headers, body = http(live.url + "/video.mp4", headers={"Range": header})
    wanted = covered(len(VIDEO), [(s, e) for s, e in ranges if s is None or e is None or s <= e])
    if not wanted:
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(VIDEO)}"
    elif max(wanted) - min(wanted) + 1 == len(wanted):
        first, last = min(wanted), max(wanted)
        assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{len(VIDEO)}"
        assert body == VIDEO[first:last + 1]
    else:
        assert status == 200 and body == VIDEO


def test_live_server(live):
    server = live
    status, headers, body = http(server.url + "/video.mp4", headers={"Range": "bytes=0-1"})
    assert status == 206 and body == VIDEO[:2] and headers["Content-Range"] == f"bytes 0-1/{len(VIDEO)}"
    status, headers, body = http(server.url + "/video.mp4", headers={"Range": "bytes=999999-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(VIDEO)}"
    assert http(server.url + url_of("日本語/ファイル.txt"))[2] == b"nihongo"
    manifest = http(server.url + "/__browser/manifest.json", headers={"User-Agent": IE11})[2]
    assert json.loads(manifest)["format"] == "web-program-pre1"
    status, headers, body = http(server.url + "/big.txt", headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == TEXT
    # Django's static files under DEBUG, as runserver serves them (the admin's CSS).
    status, headers, body = http(server.url + "/static/admin/css/base.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and b"body" in body
    assert http(server.url + "/static/admin/css/nope.css")[0] == 404
    assert b"<h1>Bookstore</h1>" in http(server.url + "/django/")[2]


def test_no_django_static_files_without_debug(start_server):
    server = start_server(env={"DJANGO_DEBUG": "0"})
    assert http(server.url + "/static/admin/css/base.css")[0] == 404
