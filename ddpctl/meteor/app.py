"""The WSGI layer in front of Django that serves a Meteor bundle (webapp's rules).

In order: the bundle's static files (manifest URLs only), ``/meteor_runtime_config.js``,
``/__<arch>/manifest.json``; then Django for every URL its URLconf resolves; then the app's
HTML for any other GET/HEAD (Meteor's client-side routes).  The program is chosen by the
``/__browser.legacy/`` style prefix or by the User-Agent.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .boilerplate import render_html, runtime_config
from .browsers import is_modern
from .bundle import Bundle, ClientProgram, StaticFile
from .hashing import js_json

__all__ = ["MeteorApp", "MeteorOptions"]

logger = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

ONE_YEAR = 31536000
_CONTENT_TYPES = {
    "js": "application/javascript; charset=UTF-8",
    "dynamic js": "application/javascript; charset=UTF-8",
    "css": "text/css; charset=UTF-8",
    "json": "application/json; charset=UTF-8",
}
_NOT_APP_URLS = {"/favicon.ico", "/robots.txt", "/app.manifest"}
_ALLOW = ("Allow", "OPTIONS, GET, HEAD")


@dataclass
class MeteorOptions:
    """How the bundle is served (``ddpctl serve --meteor-*``)."""

    root_url: str | None = None  # ROOT_URL; None: from the request's scheme and Host
    ddp_url: str | None = None  # DDP_DEFAULT_CONNECTION_URL; None: the client uses ROOT_URL
    sri_mode: str | None = "anonymous"  # integrity attributes (crossorigin mode); None: none
    inline_scripts: bool = True
    source_maps: bool = False


class MeteorApp:
    """``bundle()`` returns the bundle being served (it changes on hot code push)."""

    def __init__(
        self,
        bundle: Callable[[], Bundle],
        django_app: WSGIApp,
        django_resolves: Callable[[str], bool],
        options: MeteorOptions,
    ) -> None:
        self.bundle = bundle
        self.django_app = django_app
        self.django_resolves = django_resolves
        self.options = options
        self.path_prefix = urlsplit(options.root_url).path.rstrip("/") if options.root_url else ""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        bundle = self.bundle()
        if self.path_prefix:
            if path != self.path_prefix and not path.startswith(self.path_prefix + "/"):
                return self.django_app(environ, start_response)
            path = path[len(self.path_prefix) :] or "/"
        program, path = self._program(bundle, path, environ.get("HTTP_USER_AGENT"))
        static = program.files.get(path)
        if static is None and self.options.source_maps and path in program.source_maps:
            return self._file(
                environ,
                start_response,
                method,
                program.source_maps[path],
                "application/json; charset=UTF-8",
                None,
                False,
            )
        if static is not None:
            return self._static(environ, start_response, method, static)
        if path == "/meteor_runtime_config.js":
            config = self._config(bundle, program, environ)
            body = f"__meteor_runtime_config__ = {js_json(config)};".encode()
            return _respond(
                start_response,
                method,
                "200 OK",
                body,
                "application/javascript; charset=UTF-8",
                [("Cache-Control", "no-cache")],
            )
        if path == f"/__{program.arch[4:]}/manifest.json":
            return self._manifest(start_response, method, bundle, program)
        if self.django_resolves(environ.get("PATH_INFO", "/")):
            return self.django_app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        if "meteor_css_resource" in query:
            return _respond(
                start_response,
                method,
                "200 OK",
                b".meteor-css-not-found-error { width: 0px;}",
                "text/css; charset=UTF-8",
                [("Cache-Control", "no-cache")],
            )
        if "meteor_js_resource" in query or "meteor_dont_serve_index" in query or path in _NOT_APP_URLS:
            return _respond(
                start_response,
                method,
                "404 Not Found",
                b"Not found\n",
                "text/plain; charset=UTF-8",
                [("Cache-Control", "no-cache")],
            )
        if method not in ("GET", "HEAD"):
            return self.django_app(environ, start_response)
        config = self._config(bundle, program, environ)
        html = render_html(
            program,
            config,
            path_prefix=self.path_prefix,
            sri_mode=self.options.sri_mode,
            inline_scripts=self.options.inline_scripts,
        )
        return _respond(start_response, method, "200 OK", html.encode(), "text/html; charset=utf-8", [])

    # -- pieces ----------------------------------------------------------------------------

    def _program(self, bundle: Bundle, path: str, user_agent: str | None) -> tuple[ClientProgram, str]:
        """The program a request is for, and the path without an arch prefix."""
        if path.startswith("/__"):
            prefix, _, rest = path[3:].partition("/")
            arch = "web." + prefix
            if arch in bundle.programs:
                return bundle.programs[arch], "/" + rest
        return bundle.program_for("web.browser" if is_modern(user_agent) else "web.browser.legacy"), path

    def _config(self, bundle: Bundle, program: ClientProgram, environ: dict[str, Any]) -> dict[str, Any]:
        root_url = self.options.root_url
        if not root_url:
            scheme = environ.get("wsgi.url_scheme", "http")
            host = (
                environ.get("HTTP_HOST")
                or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT')}"
            )
            root_url = f"{scheme}://{host}/"
        return runtime_config(bundle, program, root_url, self.options.ddp_url, self.path_prefix)

    def _manifest(
        self, start_response: StartResponse, method: str, bundle: Bundle, program: ClientProgram
    ) -> Iterable[bytes]:
        body = js_json(
            {
                "format": "web-program-pre1",
                "manifest": program.manifest,
                "version": program.versions["version"],
                "PUBLIC_SETTINGS": bundle.public_settings,
            }
        ).encode()
        return _respond(
            start_response,
            method,
            "200 OK",
            body,
            "application/json; charset=UTF-8",
            [("ETag", f'"{program.versions["version"]}"'), ("Cache-Control", "no-cache")],
        )

    def _static(
        self, environ: dict[str, Any], start_response: StartResponse, method: str, static: StaticFile
    ) -> Iterable[bytes]:
        content_type = _CONTENT_TYPES.get(static.type) or _guess(static.url_path)
        headers = []
        if static.source_map_url and self.options.source_maps:
            headers.append(("X-SourceMap", self.path_prefix + static.source_map_url))
        return self._file(
            environ, start_response, method, static.path, content_type, static.hash, static.cacheable, headers
        )

    def _file(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        method: str,
        path: Any,
        content_type: str,
        etag_hash: str | None,
        cacheable: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        if method == "OPTIONS":
            start_response("200 OK", [_ALLOW, ("Content-Length", "0")])
            return [b""]
        if method not in ("GET", "HEAD"):
            return _respond(
                start_response,
                "GET",
                "405 Method Not Allowed",
                b"Method not allowed\n",
                "text/plain; charset=UTF-8",
                [_ALLOW],
            )
        headers = [
            ("Cache-Control", f"public, max-age={ONE_YEAR}, immutable" if cacheable else "public, max-age=0")
        ]
        if cacheable:
            headers.append(("Vary", "User-Agent"))  # the same URL differs between web.browser and legacy
        if etag_hash:
            etag = f'"{etag_hash}"'
            headers.append(("ETag", etag))
            if etag in [t.strip() for t in environ.get("HTTP_IF_NONE_MATCH", "").split(",")]:
                start_response("304 Not Modified", headers + (extra or []))
                return [b""]
        try:
            body = path.read_bytes()
        except OSError:
            logger.exception("cannot read bundle file %s", path)
            return _respond(
                start_response,
                "GET",
                "500 Internal Server Error",
                b"Cannot read file\n",
                "text/plain; charset=UTF-8",
                [],
            )
        return _respond(start_response, method, "200 OK", body, content_type, headers + (extra or []))


def _guess(url_path: str) -> str:
    guessed, _ = mimetypes.guess_type(url_path)
    if guessed is None:
        return "application/octet-stream"
    return guessed + ("; charset=UTF-8" if guessed.startswith("text/") else "")


def _respond(
    start_response: StartResponse,
    method: str,
    status: str,
    body: bytes,
    content_type: str,
    headers: list[tuple[str, str]],
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
    return [b"" if method == "HEAD" else body]
