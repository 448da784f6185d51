"""Serving `meteor build` output: fixture bundles in Meteor's format (ddpctl.meteor.writer),
Meteor's formulas, and a live ``ddpctl serve --meteor-bundle`` over HTTP and DDP."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import pytest

from ddpctl.meteor.boilerplate import render_html, runtime_config
from ddpctl.meteor.browsers import is_modern
from ddpctl.meteor.bundle import BundleError, load_bundle
from ddpctl.meteor.hashing import client_hash, file_hash, sri
from ddpctl.meteor.writer import write_bundle
from ddpctl.testing import DDPClient

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
IE11 = "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko"
HEAD = '<meta charset="utf-8">\n  <title>ddpctl fixture</title>'
BODY = '<div id="app"></div>'
SERVER_SECRET = b"never served by ddpctl"


def make_bundle(path, js=b"console.log('modern')", css=b"body{color:red}", **kwargs):
    return write_bundle(
        path,
        js=js,
        legacy_js=b"console.log('legacy')",
        css=css,
        head=HEAD,
        body=BODY,
        assets={"favicon.ico": b"ico!", "docs/guide.txt": b"guide"},
        source_map=b'{"version":3}',
        git_commit_hash="abc123",
        **kwargs,
    )


def runtime_config_of(html):
    match = re.search(r'decodeURIComponent\("([^"]*)"\)', html)
    return json.loads(unquote(match.group(1)))


# -- Meteor's formulas and templates, with plain calls ------------------------------------------


def test_file_hash_and_sri_match_meteors():
    # From a real bundle (reference 4.5): packages/promise/promise.d.ts, 633 bytes.
    promise_sri = "6MVw86BmnkmTtXXlCxaH8k7xIUcMZK4O57Nnu82uI5MJT9Fbru7Yv71SuHx+giKUM9wkRs7WkpqPWjADS+U2qw=="
    assert file_hash(promise_sri) == "4aa461da7ad90c74a51ddfccc84b055fc0403119"
    assert sri(b"abc") == (
        "3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
    )


def test_client_versions_follow_webapp_hashing():
    manifest = [
        {"path": "a.js", "where": "client", "type": "js", "hash": "h1"},
        {"path": "b.css", "where": "client", "type": "css", "hash": "h2"},
        {"path": "head.html", "where": "internal", "type": "head", "hash": "h3"},
        {"path": "x.js", "where": "server", "type": "js", "hash": "h4"},  # not a client file: ignored
    ]
    prefix = b'{"PUBLIC_SETTINGS":{"a":1}}'
    assert (
        client_hash(manifest, None, {"a": 1})
        == hashlib.sha1(prefix + b"a.jsh1b.cssh2head.htmlh3").hexdigest()
    )
    assert (
        client_hash(manifest, lambda t, r: t == "css", {"a": 1})
        == hashlib.sha1(prefix + b"b.cssh2").hexdigest()
    )


def test_boilerplate_html_is_meteors_template(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "bundle"))
    program = bundle.programs["web.browser"]
    config = runtime_config(bundle, program, "http://localhost:3000/")
    html = render_html(program, config, sri_mode=None)
    css, js = program.css[0]["url"], program.js[0]["url"]
    lines = html.split("\n")
    assert lines[:9] == [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'  <link rel="stylesheet" type="text/css" class="__meteor-css__" href="{css}">',
        '<meta charset="utf-8">',
        "  <title>ddpctl fixture</title>",
        "",
        "</head>",
        '<body><div id="app"></div>',
    ]
    assert lines[9].startswith(
        '  <script type="text/javascript">__meteor_runtime_config__ = '
        'JSON.parse(decodeURIComponent("%7B%22meteorRelease%22'
    )
    assert lines[10:] == [
        "",
        f'  <script type="text/javascript" src="{js}"></script>',
        "",
        "",
        "</body>",
        "</html>",
    ]
    assert runtime_config_of(html) == config
    assert config["gitCommitHash"] == "abc123" and config["appId"] == "ddpctl.bundle"
    assert config["PUBLIC_SETTINGS"] == {} and config["isModern"] is True
    with_sri = render_html(program, config, sri_mode="anonymous")
    assert f'integrity="sha512-{program.js[0]["sri"]}" crossorigin="anonymous"' in with_sri


def test_browsers_modern_or_legacy():
    assert is_modern(CHROME)
    assert is_modern("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36")
    assert is_modern("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0")
    assert is_modern(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    )
    assert not is_modern("Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 Chrome/40.0 Safari/537.36")
    assert not is_modern(IE11) and not is_modern("curl/8.0") and not is_modern(None)


def test_bad_bundles_are_refused_with_the_reason(tmp_path):
    with pytest.raises(BundleError, match="no star.json"):
        load_bundle(tmp_path)
    directory = make_bundle(tmp_path / "bundle")
    program = directory / "programs" / "web.browser" / "program.json"
    manifest = json.loads(program.read_text())
    manifest["manifest"][0]["path"] = "../server/boot.js"
    program.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leaves the program directory"):
        load_bundle(directory)
    program.write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(directory)


# -- a live server ---------------------------------------------------------------------------


def http(url, method="GET", headers=None):
    request = urllib.request.Request(url, method=method, headers={"User-Agent": CHROME, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def meteor(start_server, tmp_path):
    directory = make_bundle(tmp_path / "build" / "bundle")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"public": {"greeting": "hi"}, "private": {"key": "secret"}}))
    server = start_server(
        "--meteor-bundle",
        str(tmp_path / "build"),
        "--meteor-settings",
        str(settings),
        "--ddp-url",
        "http://ddp.example.com",
    )
    server.bundle_dir = directory
    return server


def test_app_html_and_runtime_config(meteor):
    status, headers, body = http(meteor.url + "/some/client/route")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    config = runtime_config_of(body.decode())
    assert config["ROOT_URL"] == f"http://127.0.0.1:{meteor.port}/"
    assert config["DDP_DEFAULT_CONNECTION_URL"] == "http://ddp.example.com"
    assert config["PUBLIC_SETTINGS"] == {"greeting": "hi"} and "secret" not in body.decode()
    bundle = load_bundle(meteor.bundle_dir, {"greeting": "hi"})
    assert (
        config["autoupdate"]["versions"]["web.browser"]["version"]
        == bundle.programs["web.browser"].versions["version"]
    )
    assert config["isModern"] is True
    assert b'integrity="sha512-' in body  # sri on by default
    status, headers, js = http(meteor.url + "/meteor_runtime_config.js")
    assert headers["Content-Type"] == "application/javascript; charset=UTF-8"
    assert json.loads(js.decode().removeprefix("__meteor_runtime_config__ = ").removesuffix(";")) == config


def test_static_files_headers_etag_and_arch(meteor):
    modern = load_bundle(meteor.bundle_dir).programs["web.browser"]
    legacy = load_bundle(meteor.bundle_dir).programs["web.browser.legacy"]
    js = modern.js[0]
    status, headers, body = http(meteor.url + js["url"])
    assert status == 200 and body == b"console.log('modern')"
    assert headers["Content-Type"] == "application/javascript; charset=UTF-8"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Vary"] == "User-Agent, Accept-Encoding" and headers["ETag"] == f'"{js["hash"]}"'
    assert "X-SourceMap" not in headers  # source maps are off by default
    status, headers, body = http(meteor.url + js["url"], headers={"If-None-Match": f'"{js["hash"]}"'})
    assert status == 304 and body == b""
    status, headers, _ = http(meteor.url + modern.css[0]["url"])
    assert headers["Content-Type"] == "text/css; charset=UTF-8"
    status, headers, body = http(meteor.url + "/favicon.ico")
    assert body == b"ico!" and headers["Cache-Control"] == "public, max-age=0"
    assert "User-Agent" not in headers.get("Vary", "")  # not cacheable: the same for every program
    assert headers["Content-Type"] == "image/vnd.microsoft.icon"
    assert http(meteor.url + "/docs/guide.txt")[2] == b"guide"
    assert http(meteor.url + js["url"], method="HEAD")[2] == b""
    status, headers, _ = http(meteor.url + js["url"], method="POST")
    assert status == 405 and headers["Allow"] == "OPTIONS, GET, HEAD"

    # Legacy browsers get the legacy program: by User-Agent, or by the /__browser.legacy/ prefix.
    _, _, page = http(meteor.url + "/", headers={"User-Agent": IE11})
    assert legacy.js[0]["url"].encode() in page and runtime_config_of(page.decode())["isModern"] is False
    assert http(meteor.url + legacy.js[0]["url"], headers={"User-Agent": IE11})[2] == b"console.log('legacy')"
    assert http(meteor.url + "/__browser.legacy" + legacy.js[0]["url"])[2] == b"console.log('legacy')"
    assert http(meteor.url + "/__browser/manifest.json")[0] == 200

    # Meteor's answers for bundle URLs that do not exist.
    status, headers, body = http(meteor.url + "/nope.css?meteor_css_resource=true")
    assert status == 200 and body == b".meteor-css-not-found-error { width: 0px;}"
    assert http(meteor.url + "/nope.js?meteor_js_resource=true")[0] == 404
    # Django keeps the URLs it routes.
    assert b"<h1>Bookstore</h1>" in http(meteor.url + "/django/")[2]


@pytest.mark.parametrize(
    "path",
    [
        "/programs/server/boot.js",
        "/programs/server/app/app.js",
        "/app/app.js",
        "/boot.js",
        "/star.json",
        "/program.json",
        "/head.html",
        "/body.html",
        "/../star.json",
        "/%2e%2e/programs/server/app/app.js",
        "/..%2fprograms%2fserver%2fboot.js",
        "/__browser.legacy/../../server/boot.js",
        "/app/favicon.ico/../../program.json",
    ],
)
def test_server_files_and_traversal_are_refused(meteor, path):
    status, headers, body = http(meteor.url + path)
    assert SERVER_SECRET not in body and b'"manifest"' not in body and b"site-archive" not in body
    assert status in (200, 400, 404) and (status != 200 or headers["Content-Type"].startswith("text/html"))


def test_source_maps_only_when_enabled(start_server, tmp_path):
    directory = make_bundle(tmp_path / "bundle")
    js = load_bundle(directory).programs["web.browser"].js[0]
    off = start_server("--meteor-bundle", str(directory))
    assert http(off.url + js["sourceMapUrl"])[2] != b'{"version":3}'
    on = start_server("--meteor-bundle", str(directory), "--meteor-source-maps", "--meteor-sri", "none")
    status, headers, body = http(on.url + js["url"])
    assert headers["X-SourceMap"] == js["sourceMapUrl"]
    assert http(on.url + js["sourceMapUrl"])[2] == b'{"version":3}'
    assert b"integrity=" not in http(on.url + "/")[2]


def autoupdate_docs(client):
    return client.collections.get("meteor_autoupdate_clientVersions", {})


def test_hot_code_push_publishes_new_versions_without_a_restart(meteor, tmp_path):
    with DDPClient(meteor.ws_url) as client:
        client.connect()
        client.subscribe("meteor_autoupdate_clientVersions")
        docs = autoupdate_docs(client)
        assert set(docs) == {
            "web.browser",
            "web.browser.legacy",
            "version",
            "version-refreshable",
            "version-cordova",
        }
        assert docs["version"] == {"version": "outdated"}
        before = dict(docs["web.browser"])
        assert (
            before["versionNonRefreshable"]
            == load_bundle(meteor.bundle_dir, {"greeting": "hi"})
            .programs["web.browser"]
            .versions["versionNonRefreshable"]
        )
        assert before["assets"] == [
            {"url": load_bundle(meteor.bundle_dir).programs["web.browser"].css[0]["url"]}
        ]

        # A CSS-only change: refreshable versions change, non-refreshable ones do not.
        make_bundle(meteor.bundle_dir, css=b"body{color:blue}")
        deadline = time.monotonic() + 15
        while autoupdate_docs(client)["web.browser"]["versionRefreshable"] == before["versionRefreshable"]:
            assert time.monotonic() < deadline, meteor.output()
            client.recv()
        after = dict(autoupdate_docs(client)["web.browser"])
        assert after["versionNonRefreshable"] == before["versionNonRefreshable"]
        assert after["assets"] != before["assets"]
        assert after["assets"][0]["url"].encode() in http(meteor.url + "/")[2]  # new pages get the new CSS

        # New code: the non-refreshable version changes (clients reload).
        make_bundle(meteor.bundle_dir, js=b"console.log('v2')", css=b"body{color:blue}")
        while (
            autoupdate_docs(client)["web.browser"]["versionNonRefreshable"] == after["versionNonRefreshable"]
        ):
            assert time.monotonic() < deadline + 15, meteor.output()
            client.recv()

        # A broken bundle is not served; the last good one stays.
        (Path(meteor.bundle_dir) / "star.json").write_text("{broken")
        time.sleep(1.5)
        status, _, body = http(meteor.url + "/")
        assert status == 200 and b"console.log" not in body and b"__meteor_runtime_config__" in body
        assert "cannot be served" in meteor.output()
        # An appId that is not this app's gets nothing; a wrong type is a Match failure.
        other = client.subscribe("meteor_autoupdate_clientVersions", "someone.else")
        assert other
        with pytest.raises(Exception, match="Match failed"):
            client.subscribe("meteor_autoupdate_clientVersions", 42)


def test_serve_refuses_a_bad_bundle_in_one_line(ddpctl, tmp_path):
    result = ddpctl("serve", "--meteor-bundle", str(tmp_path), "--listen", "127.0.0.1:0", check=False)
    assert result.returncode == 1
    assert "cannot serve the Meteor bundle" in result.stderr and "no star.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_bookstore_bundle_is_built_from_its_sources(tmp_path):
    """The committed front-end bundle is what frontend/build.py makes of the sources."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent / "examples" / "bookstore" / "frontend"
    spec = importlib.util.spec_from_file_location("bookstore_frontend_build", root / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.build(tmp_path / "bundle")
    committed = root / "bundle"
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for name in files:
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), (
            f"{name}: run frontend/build.py"
        )


# -- ddpctl meteor build / inspect ------------------------------------------------------------
# Meteor cannot be installed here: a stand-in `meteor` executable writes a format-faithful
# bundle where `meteor build --directory OUT` would, or fails like a broken build does.

FAKE_METEOR = """#!PYTHON
import sys
from ddpctl.meteor.writer import write_bundle
assert sys.argv[1:3] == ["build", "--directory"], sys.argv
print("Building for web.browser...", flush=True)
if "--fail" in sys.argv:
    print("Errors prevented bundling:\\nclient/main.js:3: Unexpected token", flush=True)
    sys.exit(1)
write_bundle(sys.argv[3] + "/bundle", js=b"console.log('built')", css=b"a{}", head="<title>x</title>")
print("Done.", flush=True)
"""


@pytest.fixture
def meteor_app(tmp_path):
    app = tmp_path / "myapp"
    (app / ".meteor").mkdir(parents=True)
    (app / ".meteor" / "release").write_text("METEOR@3.4.1\n")
    fake = tmp_path / "bin" / "meteor"
    fake.parent.mkdir()
    fake.write_text(FAKE_METEOR.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    return app, fake


def ddpctl_plain(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ddpctl", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_meteor_build_runs_meteor_and_summarises(meteor_app, tmp_path):
    app, fake = meteor_app
    out = tmp_path / "build"
    result = ddpctl_plain("meteor", "build", str(app), "-o", str(out), "--meteor", str(fake))
    assert result.returncode == 0, result.stderr
    assert "Building for web.browser" in result.stderr  # meteor's progress, passed on
    assert "web.browser\t" in result.stdout and "web.browser.legacy" in result.stdout
    assert f"ddpctl serve --meteor-bundle {out}" in result.stdout
    summary = json.loads(ddpctl_plain("meteor", "build", str(app), "-o", str(out), "--meteor", str(fake),
                                      "--json").stdout)
    assert summary["programs"]["web.browser"]["files"] == 2 and summary["meteorRelease"] == "METEOR@3.4.1"
    # From PATH too.
    on_path = ddpctl_plain("meteor", "build", str(app), "-o", str(out),
                           env={"PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert on_path.returncode == 0, on_path.stderr


def test_meteor_build_failures_are_clear(meteor_app, tmp_path):
    app, fake = meteor_app
    failed = ddpctl_plain("meteor", "build", str(app), "-o", str(tmp_path / "out"), "--meteor", str(fake),
                          "--", "--fail")
    assert failed.returncode == 1
    assert "meteor build failed (exit 1)" in failed.stderr and "Unexpected token" in failed.stderr
    missing = ddpctl_plain("meteor", "build", str(app), env={"PATH": "/nonexistent"})
    assert missing.returncode == 1 and "meteor is not installed or not on PATH" in missing.stderr
    not_an_app = ddpctl_plain("meteor", "build", str(tmp_path), "--meteor", str(fake))
    assert not_an_app.returncode == 1 and "is not a Meteor app" in not_an_app.stderr
    assert "Traceback" not in failed.stderr + missing.stderr + not_an_app.stderr


def test_meteor_inspect(tmp_path):
    directory = make_bundle(tmp_path / "bundle")
    data = json.loads(ddpctl_plain("meteor", "inspect", str(tmp_path), "--json").stdout)
    urls = {f["url"] for f in data["files"] if f["arch"] == "web.browser"}
    bundle = load_bundle(directory)
    assert urls == set(bundle.programs["web.browser"].files)
    assert not any("server" in u or u.endswith(".html") for u in urls)
    text = ddpctl_plain("meteor", "inspect", str(directory), "--files").stdout
    assert "/favicon.ico" in text and "1 year, immutable" in text
    bad = ddpctl_plain("meteor", "inspect", str(tmp_path / "bundle" / "programs"))
    assert bad.returncode == 1 and "no star.json" in bad.stderr
