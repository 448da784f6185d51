"""The WSGI layer in front of Django that serves a Meteor bundle (webapp's rules).

In order: ``/meteor_runtime_config.js``, the bundle's static files (manifest URLs and each
program's ``/__<arch>/manifest.json``, looked up in the request's program first and then
in every other one, as webapp's ``getStaticFileInfo`` does); then Django for every URL its
URLconf resolves; then the app's HTML for any other GET/HEAD (Meteor's client-side routes).
The program is chosen by the ``/__browser.legacy/`` style prefix or by the User-Agent.

Files are served as webapp's ``send`` serves them: byte ranges, ``ETag``/``304``,
``Accept-Ranges`` (:mod:`.byte_ranges`), compressed when the client accepts it
(:mod:`.compression`), streamed through ``wsgi.file_wrapper`` when the server offers it
(else 64 KiB at a time), never whole in memory.  Request paths are percent-decoded UTF-8
(any file name: spaces, non-ASCII); only manifest URLs are servable, and a file whose real
path (symlinks resolved) leaves its program's directory is refused with 404.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import byte_ranges
from .boilerplate import render_html, runtime_config
from .browsers import is_modern
from .bundle import Bundle, ClientProgram, StaticFile, contained
from .compression import THRESHOLD, CompressedFiles, choose_encoding, compressible
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
BLOCK_SIZE = 64 << 10


@dataclass
class MeteorOptions:
    """How the bundle is served (``ddpctl serve --meteor-*``)."""

    root_url: str | None = None  # ROOT_URL; None: from the request's scheme and Host
    ddp_url: str | None = None  # DDP_DEFAULT_CONNECTION_URL; None: the client uses ROOT_URL
    sri_mode: str | None = "anonymous"  # integrity attributes (crossorigin mode); None: none
    inline_scripts: bool = True
    source_maps: bool = False


class MeteorApp:
    """``bundle()`` returns the bundle being served (it changes on hot code push);
    ``root_url(environ)`` the ``ROOT_URL`` of a request (default: ``options.root_url``, else
    the request's scheme and ``Host``; the server passes :meth:`.hosts.HostPolicy.root_url`)."""

    def __init__(
        self,
        bundle: Callable[[], Bundle],
        django_app: WSGIApp,
        django_resolves: Callable[[str], bool],
        options: MeteorOptions,
        root_url: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.bundle = bundle
        self.django_app = django_app
        self.django_resolves = django_resolves
        self.options = options
        self.root_url = root_url or self._request_root_url
        self.path_prefix = urlsplit(options.root_url).path.rstrip("/") if options.root_url else ""
        self.compressed = CompressedFiles()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        raw_path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        bundle = self.bundle()
        try:  # PEP 3333: PATH_INFO holds the URL's bytes as latin-1; Meteor's are UTF-8
            path = raw_path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            path = None  # as webapp when decodeURIComponent throws: not a static file
        if self.path_prefix and path is not None:
            if path != self.path_prefix and not path.startswith(self.path_prefix + "/"):
                return self.django_app(environ, start_response)
            path = path[len(self.path_prefix) :] or "/"
        program, stripped = self._program(bundle, path or "/", environ.get("HTTP_USER_AGENT"))
        if stripped == "/meteor_runtime_config.js":
            config = self._config(bundle, program, environ)
            body = f"__meteor_runtime_config__ = {js_json(config)};".encode()
            return _respond_compressed(environ, start_response, method, body, _CONTENT_TYPES["js"],
                                       [("Cache-Control", "no-cache")])
        if path is not None:
            found = self._lookup(bundle, program, path, stripped)
            if found is not None:
                return found(environ, start_response, method)
        if self.django_resolves(raw_path):
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
        if "meteor_js_resource" in query or "meteor_dont_serve_index" in query or stripped in _NOT_APP_URLS:
            return _not_found(start_response, method)
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
        html_type = "text/html; charset=utf-8"
        return _respond_compressed(environ, start_response, method, html.encode(), html_type, [])

    # -- pieces ----------------------------------------------------------------------------

    def _program(self, bundle: Bundle, path: str, user_agent: str | None) -> tuple[ClientProgram, str]:
        """The program a request is for, and the path without an arch prefix."""
        if path.startswith("/__"):
            prefix, _, rest = path[3:].partition("/")
            arch = "web." + prefix
            if arch in bundle.programs:
                return bundle.programs[arch], "/" + rest
        return bundle.program_for("web.browser" if is_modern(user_agent) else "web.browser.legacy"), path

    def _lookup(
        self, bundle: Bundle, chosen: ClientProgram, original: str, path: str
    ) -> Callable[[dict[str, Any], StartResponse, str], Iterable[bytes]] | None:
        """What serves ``original`` (or ``path``, without its arch prefix): the chosen
        program's file first, then any other program's (webapp's ``getStaticFileInfo``)."""
        programs = [chosen] + [p for p in bundle.programs.values() if p is not chosen]
        for program in programs:
            for key in (original, path) if path != original else (original,):
                if key in program.files:
                    static = program.files[key]
                    return lambda e, s, m, st=static, pr=program: self._static(e, s, m, pr, st)
                if self.options.source_maps and key in program.source_maps:
                    source = program.source_maps[key]
                    return lambda e, s, m, src=source, pr=program: self._file(
                        e, s, m, pr, src, "application/json; charset=UTF-8", None, True)
                if key == f"/__{program.arch[4:]}/manifest.json":
                    return lambda e, s, m, pr=program: self._manifest(e, s, m, bundle, pr)
        return None

    def _request_root_url(self, environ: dict[str, Any]) -> str:
        if self.options.root_url:
            return self.options.root_url
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or (
            f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT')}")
        return f"{scheme}://{host}/"

    def _config(self, bundle: Bundle, program: ClientProgram, environ: dict[str, Any]) -> dict[str, Any]:
        return runtime_config(bundle, program, self.root_url(environ), self.options.ddp_url, self.path_prefix)

    def _manifest(
        self, environ: dict[str, Any], start_response: StartResponse, method: str, bundle: Bundle,
        program: ClientProgram
    ) -> Iterable[bytes]:
        """``/__<arch>/manifest.json``: the program as JSON (webapp's ``content`` entry)."""
        if method not in ("GET", "HEAD"):
            return _method_not_allowed(start_response, method)
        body = js_json(
            {
                "format": "web-program-pre1",
                "manifest": program.manifest,
                "version": program.versions["version"],
                "PUBLIC_SETTINGS": bundle.public_settings,
            }
        ).encode()
        headers = [("ETag", f'"{program.versions["version"]}"'), ("Cache-Control", "no-cache")]
        return _respond_compressed(environ, start_response, method, body, "application/json; charset=UTF-8",
                                   headers)

    def _static(
        self, environ: dict[str, Any], start_response: StartResponse, method: str, program: ClientProgram,
        static: StaticFile
    ) -> Iterable[bytes]:
        content_type = _CONTENT_TYPES.get(static.type) or _guess(static.url_path)
        headers = []
        if static.source_map_url and self.options.source_maps:
            headers.append(("X-SourceMap", self.path_prefix + static.source_map_url))
        return self._file(
            environ, start_response, method, program, static.path, content_type, static.hash or None,
            static.cacheable, headers
        )

    def _file(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        method: str,
        program: ClientProgram,
        path: Any,
        content_type: str,
        etag_hash: str | None,
        cacheable: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        if method not in ("GET", "HEAD"):
            return _method_not_allowed(start_response, method)
        if not contained(program.directory, path):
            logger.warning("refused %s: its real path %s is outside %s", path, os.path.realpath(path),
                           program.directory)
            return _not_found(start_response, method)
        try:
            stat = os.stat(path)
        except OSError:
            logger.exception("cannot read bundle file %s", path)
            return _respond(start_response, "GET", "500 Internal Server Error", b"Cannot read file\n",
                            "text/plain; charset=UTF-8", [])
        size = stat.st_size
        headers = [
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", f"public, max-age={ONE_YEAR}, immutable" if cacheable else "public, max-age=0"),
        ]
        vary = ["User-Agent"] if cacheable else []  # the same URL differs between web.browser and legacy
        can_compress = compressible(content_type)
        if can_compress:
            vary.append("Accept-Encoding")
        if vary:
            headers.append(("Vary", ", ".join(vary)))
        # send's ETag when the manifest has no hash: W/"<size>-<mtime in ms>", in hex
        etag = f'"{etag_hash}"' if etag_hash else f'W/"{size:x}-{stat.st_mtime_ns // 1_000_000:x}"'
        headers.append(("ETag", etag))
        headers += extra or []
        if_match = environ.get("HTTP_IF_MATCH")
        if if_match and not byte_ranges.etag_matches(if_match, etag):
            return _respond(start_response, method, "412 Precondition Failed", b"Precondition Failed\n",
                            "text/plain; charset=UTF-8", [])
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if (if_none_match and byte_ranges.etag_matches(if_none_match, etag)
                and "no-cache" not in environ.get("HTTP_CACHE_CONTROL", "").lower()):
            start_response("304 Not Modified", headers)
            return [b""]
        range_header = environ.get("HTTP_RANGE")
        if range_header is not None:
            ranges = byte_ranges.parse_range(size, range_header)
            if ranges != byte_ranges.MALFORMED and not byte_ranges.if_range_holds(environ, etag):
                ranges = byte_ranges.MALFORMED
            if ranges == byte_ranges.UNSATISFIABLE:
                body = b"Range Not Satisfiable\n"
                start_response("416 Range Not Satisfiable", [
                    ("Content-Type", "text/plain; charset=UTF-8"), ("Content-Length", str(len(body))),
                    ("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")])
                return [b"" if method == "HEAD" else body]
            if isinstance(ranges, list) and len(ranges) == 1:
                start, end = ranges[0]
                start_response("206 Partial Content", [
                    ("Content-Type", content_type), ("Content-Length", str(end - start + 1)),
                    ("Content-Range", f"bytes {start}-{end}/{size}"), *headers])
                if method == "HEAD":
                    return [b""]
                return self._send(environ, path, start, end - start + 1)
        compress = can_compress and size >= THRESHOLD and method == "GET"
        encoding = choose_encoding(environ) if compress else None
        if encoding is not None:
            try:
                compressed = self.compressed.body(path, size, stat.st_mtime_ns, encoding)
            except OSError:
                logger.exception("cannot read bundle file %s", path)
                return _respond(start_response, "GET", "500 Internal Server Error", b"Cannot read file\n",
                                "text/plain; charset=UTF-8", [])
            headers.append(("Content-Encoding", encoding))
            if isinstance(compressed, bytes):
                return _respond(start_response, method, "200 OK", compressed, content_type, headers)
            start_response("200 OK", [("Content-Type", content_type), *headers])
            return compressed
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(size)), *headers])
        if method == "HEAD":
            return [b""]
        return self._send(environ, path, 0, size)

    @staticmethod
    def _send(environ: dict[str, Any], path: Any, offset: int, length: int) -> Iterable[bytes]:
        """``length`` bytes of the file from ``offset``, through ``wsgi.file_wrapper`` when
        the server has one, else in :data:`BLOCK_SIZE` chunks."""
        try:
            file = open(path, "rb")
        except OSError:
            logger.exception("cannot read bundle file %s", path)
            return [b""]  # the status is sent: the client sees a short body
        body = FileSlice(file, offset, length)
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(body, BLOCK_SIZE) if wrapper is not None else body


class FileSlice:
    """``length`` bytes of an open binary file from ``offset``: a file-like object
    (``read``, ``close``) for ``wsgi.file_wrapper`` and an iterable of chunks."""

    def __init__(self, file: Any, offset: int, length: int) -> None:
        self.file = file
        self.remaining = length
        if offset:
            file.seek(offset)

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        wanted = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self.file.read(wanted)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return data

    def __iter__(self) -> Any:
        while True:
            chunk = self.read(BLOCK_SIZE)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        self.file.close()


def _guess(url_path: str) -> str:
    guessed, _ = mimetypes.guess_type(url_path)
    if guessed is None:
        return "application/octet-stream"
    return guessed + ("; charset=UTF-8" if guessed.startswith("text/") else "")


def _method_not_allowed(start_response: StartResponse, method: str) -> list[bytes]:
    if method == "OPTIONS":
        start_response("200 OK", [_ALLOW, ("Content-Length", "0")])
        return [b""]
    return _respond(start_response, "GET", "405 Method Not Allowed", b"Method not allowed\n",
                    "text/plain; charset=UTF-8", [_ALLOW])


def _not_found(start_response: StartResponse, method: str) -> list[bytes]:
    return _respond(start_response, method, "404 Not Found", b"Not found\n", "text/plain; charset=UTF-8",
                    [("Cache-Control", "no-cache")])


def _respond_compressed(
    environ: dict[str, Any],
    start_response: StartResponse,
    method: str,
    body: bytes,
    content_type: str,
    headers: list[tuple[str, str]],
) -> list[bytes]:
    """A ``200`` of generated text (the app's HTML, the runtime config, a manifest),
    compressed when the client accepts it (as webapp's ``compression`` middleware does)."""
    headers = [*headers, ("Vary", "Accept-Encoding")]
    encoding = choose_encoding(environ) if method == "GET" and len(body) >= THRESHOLD else None
    if encoding is not None:
        body = CompressedFiles.compress_bytes(body, encoding)
        headers.append(("Content-Encoding", encoding))
    return _respond(start_response, method, "200 OK", body, content_type, headers)


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
