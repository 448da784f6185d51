"""The HTTP/1.1 connection: strict request parsing with h11, WSGI, streaming responses.

Each accepted socket (a :class:`gevent.server.StreamServer`, with TLS if configured) gets
one :class:`HTTPConnection` on its own greenlet: it reads a request head with h11 (a
sans-IO parser that follows RFC 9112), builds a PEP 3333 environ, calls the WSGI
application, streams its iterable (each chunk written as it comes: a blocking ``sendall``
is the backpressure, so a slow reader holds at most one chunk), then keeps the connection
alive for the next request or closes it.

Strictness.  Whatever h11 refuses gets its status (400, 431, or 501 for a transfer coding
other than ``chunked``).  On top of h11, these checks run on the raw request head, where
h11 is lenient in ways that matter behind a proxy (a proxy that reads the message
differently would let a second request be smuggled in the first one's body):

* ``Content-Length`` together with ``Transfer-Encoding``: 400 (RFC 9112 6.3 allows
  treating it as an error; h11 lets chunked win);
* ``Content-Length`` repeated, or a list (``3, 3``), even with equal values: 400 (h11
  accepts equal values, RFC 9110 8.6 permits either);
* ``Transfer-Encoding`` on an HTTP/1.0 request: 400 (RFC 9112 6.1: faulty framing);
* obsolete line folding (RFC 9112 5.2 lets a server reject it; h11 joins the lines);
* a bare LF as a line end in the head (h11 accepts it, RFC 9112 2.2 allows it; a proxy
  that does not may see other headers);
* a header name with ``_``: dropped, not refused (``X_Forwarded_For`` would become the
  same WSGI key as ``X-Forwarded-For``; nginx and gunicorn drop them too);
* a version other than HTTP/1.0 or 1.1: 505;
* (kept, like h11 does: control characters other than NUL, CR and LF in a header value,
  which RFC 9110 5.5 lets a recipient retain; they cannot change the framing, and clients
  send them in cookies);
* the request line over ``max_request_line`` bytes: 414; the head over
  ``max_header_size`` bytes or with more than ``max_headers`` fields: 431 (h11's own
  limit applies only to a head that arrives in pieces).

Every refusal is answered with ``Connection: close`` and the connection is closed after
it: nothing sent after a refused request is read as another request.

Timeouts (:class:`HTTPLimits`): the request head must arrive within ``header_timeout``
seconds of the connection (or of the first byte of a kept-alive connection's next
request); a kept-alive connection idle for ``keepalive_timeout`` is closed; reading a
request body fails after ``body_timeout`` seconds without a byte; a response that does
not get 64 KiB further within ``send_timeout`` seconds drops the connection.  The TLS handshake
counts against the header timeout.

WSGI details: ``wsgi.input`` reads a ``Content-Length`` body through h11 as the
application asks (the first read answers ``Expect: 100-continue``); a chunked body is
read whole before the application runs (1 MiB in memory, the rest in a temporary file;
over ``max_chunked_body`` bytes: 413) and handed on with its ``CONTENT_LENGTH``, since
Django reads no body without one;
``wsgi.file_wrapper`` streams a file in blocks of at least 64 KiB; a response without
``Content-Length`` is sent chunked to HTTP/1.1 clients (HTTP/1.0: until close), except a
one-element list, whose length is known; HEAD gets the headers of the GET response and no
body.  The iterable's ``close()`` is always called, also when the client went away (a
failed write ends the iteration).
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

import gevent
import h11
from gevent.server import StreamServer

__all__ = ["FileWrapper", "HTTPConnection", "HTTPLimits", "HTTPServer", "RequestRefused"]

logger = logging.getLogger(__name__)
error_log = logging.getLogger("ddpctl.server.error")
access_log = logging.getLogger("ddpctl.access")

_READ_SIZE = 65536
_SEND_SLICE = 65536  # bytes written within one send timeout
_FILE_BLOCK = 65536
_DRAIN_LIMIT = 65536  # unread request body bytes read and dropped to keep a connection alive
_SPOOL_IN_MEMORY = 1 << 20  # bytes of a chunked request body kept in memory
_LINGER = 1.0  # seconds a refused request's remaining bytes are read before the close
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class HTTPLimits:
    """Timeouts (seconds) and sizes (bytes) of the HTTP layer; defaults like node and uvicorn."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    max_request_line: int = 8192
    max_header_size: int = 16384
    max_headers: int = 100
    max_chunked_body: int = 100 << 20  # a chunked request body is buffered; larger: 413


_BYTES_REPR = re.compile(r"bytearray\((b'(?:[^'\\]|\\.)*')\)")


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's message, its ``bytearray(b'...')`` shown as ``b'...'``."""
    return _BYTES_REPR.sub(r"\1", str(exc))


class RequestRefused(Exception):
    """A request that is answered with ``status`` and then the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 505: "HTTP Version Not Supported"}


class FileWrapper:
    """``wsgi.file_wrapper`` (PEP 3333): a file read in blocks (at least 64 KiB) as it is sent."""

    def __init__(self, filelike: Any, block_size: int = _FILE_BLOCK) -> None:
        self.filelike = filelike
        self.block_size = max(block_size, _FILE_BLOCK)

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def check_head(head: bytes, limits: HTTPLimits) -> None:
    """Refuse (``RequestRefused``) what h11 accepts but a strict server must not.

    ``head`` is the raw request head up to and including its blank line.
    """
    line_end = head.find(b"\n")
    if line_end > limits.max_request_line:
        raise RequestRefused(414, "request line too long")
    if len(head) > limits.max_header_size:
        raise RequestRefused(431, "request head too large")
    if _BARE_LF.search(head):
        raise RequestRefused(400, "bare LF in the request head")
    lines = head[line_end + 1:].split(b"\r\n")
    fields = [line for line in lines if line]
    if len(fields) > limits.max_headers:
        raise RequestRefused(431, "too many header fields")
    content_length = 0
    transfer_encoding = False
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            raise RequestRefused(400, "obsolete line folding")
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            content_length += 1
            if b"," in value:
                content_length += 1
        elif name == b"transfer-encoding":
            transfer_encoding = True
    if content_length > 1:
        raise RequestRefused(400, "more than one Content-Length")
    if content_length and transfer_encoding:
        raise RequestRefused(400, "both Content-Length and Transfer-Encoding")
    if transfer_encoding and head[:line_end].rstrip(b"\r").endswith(b"HTTP/1.0"):
        raise RequestRefused(400, "Transfer-Encoding in an HTTP/1.0 request")


class _Input:
    """``wsgi.input``: the request body, read through h11 (``Content-Length`` or chunked)."""

    def __init__(self, connection: HTTPConnection) -> None:
        self._connection = connection
        self._buffer = bytearray()
        self._done = False

    def _fill(self) -> bool:
        """Read one more piece of body; False at its end."""
        if self._done:
            return False
        data = self._connection.next_body_data()
        if data is None:
            self._done = True
            return False
        self._buffer += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(self._buffer)
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 or (size is not None and 0 <= size <= len(self._buffer)) or not self._fill():
                break
        limit = end + 1 if end >= 0 else len(self._buffer)
        if size is not None and size >= 0:
            limit = min(limit, size)
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class _ClientGone(Exception):
    """A write to the client failed: stop producing the response."""


class HTTPConnection:
    """One client connection: requests read with h11, answered by the WSGI application.

    Subclasses override :meth:`handle_request` (``ddpctl.server.handler.DDPHandler``
    takes over the socket for WebSocket upgrades through :meth:`switch_protocols`).
    """

    def __init__(self, server: HTTPServer, sock: socket.socket, address: Any) -> None:
        self.server = server
        self.socket = sock
        self.address = address
        self.limits = server.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_header_size)
        self.environ: dict[str, Any] = {}
        self.close_connection = False
        self.idle = True  # waiting for a request (shutdown closes idle connections)
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._headers_sent = False
        self._response_length = 0
        self._head_only = False
        self._request_line = ""
        self._started = 0.0
        self._refused: RequestRefused | None = None  # the request body could not be read
        self._watcher: gevent.Greenlet | None = None  # watch_disconnect's, for this response
        self.server_accepted = time.monotonic()
        self.handed_over = False  # the socket outlives this connection (hand_over)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            first = True
            while not self.server.draining or first:
                if not self._read_request(first):
                    return
                first = False
                self.idle = False
                self.server.busy += 1
                try:
                    self.handle_request(self.environ)
                finally:
                    self.server.busy -= 1
                    self.idle = True
                    body = self.environ.get("wsgi.input")
                    if not isinstance(body, _Input):
                        body.close()  # a buffered chunked body's temporary file
                if self.close_connection or not self._next_cycle():
                    return
        except RequestRefused as exc:
            self._refuse(exc)
        except (OSError, _ClientGone) as exc:
            logger.debug("connection from %s ended: %s", self._client(), exc)
        finally:
            self._close()

    def _client(self) -> str:
        return self.address[0] if isinstance(self.address, tuple) else str(self.address or "-")

    def _recv(self, deadline: float | None) -> bytes:
        if deadline is None:
            self.socket.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.socket.settimeout(remaining)
        return self.socket.recv(_READ_SIZE)

    def _read_request(self, first: bool) -> bool:
        """Read the next request head; False if the connection should just close."""
        conn, limits = self.h11, self.limits
        raw = bytearray(conn.trailing_data[0])
        now = time.monotonic()
        if first:
            deadline = self.server_accepted + limits.header_timeout
        elif raw:
            deadline = now + limits.header_timeout
        else:
            deadline = None
            try:
                data = self._recv(now + limits.keepalive_timeout)
            except (TimeoutError, OSError):
                return False
            if not data:
                return False
            raw += data
            conn.receive_data(data)
            deadline = time.monotonic() + limits.header_timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RequestRefused(exc.error_status_hint, _h11_reason(exc)) from None
            if isinstance(event, h11.Request):
                break
            if isinstance(event, h11.ConnectionClosed):
                return False
            if event is not h11.NEED_DATA:
                raise RequestRefused(400, f"unexpected {type(event).__name__}")
            if b"\n" not in raw and len(raw) > limits.max_request_line:
                raise RequestRefused(414, "request line too long")
            if len(raw) > limits.max_header_size:
                raise RequestRefused(431, "request head too large")
            try:
                data = self._recv(deadline)
            except TimeoutError:
                if raw.strip():
                    raise RequestRefused(408, "request head not received in time") from None
                return False
            raw += data
            conn.receive_data(data)  # b"" is the end of the stream
        match = _HEAD_END.search(raw)
        check_head(bytes(raw[:match.end()]) if match else bytes(raw), limits)
        if event.http_version not in (b"1.0", b"1.1"):
            raise RequestRefused(505, "only HTTP/1.0 and HTTP/1.1")
        self._started = time.time()
        self.environ = self.make_environ(event)
        if self.environ.get("HTTP_TRANSFER_ENCODING"):
            self._buffer_chunked_body(self.environ)
        return True

    def _buffer_chunked_body(self, environ: dict[str, Any]) -> None:
        """Read a chunked body whole before the application runs (as nginx does): a
        malformed chunk is refused with 400 before anything is answered, and the body gets
        a ``CONTENT_LENGTH`` (Django reads no body without one).  Up to 1 MiB stays in
        memory, more goes to a temporary file."""
        body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        size = 0
        try:
            while True:
                data = self.next_body_data()
                if data is None:
                    break
                size += len(data)
                if size > self.limits.max_chunked_body:
                    raise RequestRefused(413, "chunked request body too large")
                body.write(data)
        except BaseException:
            body.close()
            raise
        body.seek(0)
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = str(size)  # and no more chunked framing, as nginx forwards it
        del environ["HTTP_TRANSFER_ENCODING"]

    def _next_cycle(self) -> bool:
        """Ready for the next request on this connection?"""
        conn = self.h11
        if conn.their_state is h11.SEND_BODY and not conn.they_are_waiting_for_100_continue:
            drained = 0  # the application left part of the body: read it if it is small
            try:
                while drained <= _DRAIN_LIMIT:
                    data = self.next_body_data()
                    if data is None:
                        break
                    drained += len(data)
            except (RequestRefused, OSError):
                return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

    def _refuse(self, exc: RequestRefused) -> None:
        # A timeout is what every idle client gets (slowloris: thousands): debug only.
        logger.log(logging.DEBUG if exc.status == 408 else logging.INFO, "refused a request from %s: %s",
                   self._client(), exc)
        body = f"{exc.reason}\n".encode()
        head = (f"HTTP/1.1 {exc.status} {_REASONS.get(exc.status, 'Error')}\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self._request_line = self._request_line or "-"
        try:
            self.socket.settimeout(self.limits.send_timeout)
            self.socket.sendall(head + body)
            self._linger()
        except OSError:
            pass  # the client is gone already; nothing more to tell it
        self._log_access(str(exc.status), len(body))

    def _linger(self) -> None:
        """Half-close, then read what the client still sends for a moment, so that our
        answer is not destroyed by a reset (RFC 9112 9.6)."""
        self.socket.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER
        read = 0
        while read < 4 * _DRAIN_LIMIT:
            try:
                data = self._recv(deadline)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            read += len(data)

    def _close(self) -> None:
        if self.handed_over:
            return
        try:
            self.socket.close()
        except OSError as exc:
            logger.debug("closing a socket: %s", exc)

    # -- the request --------------------------------------------------------------------

    def make_environ(self, request: h11.Request) -> dict[str, Any]:
        """The PEP 3333 environ of ``request``."""
        method = request.method.decode("ascii")
        target = request.target
        self._request_line = (f"{method} {target.decode('latin-1')} HTTP/"
                              f"{request.http_version.decode('ascii')}")
        host_override = None
        if not target.startswith(b"/"):
            # absolute-form (RFC 9112 3.2.2): its authority replaces Host; "*" for OPTIONS
            scheme, sep, rest = target.partition(b"://")
            if sep and scheme.lower() in (b"http", b"https"):
                authority, slash, path_part = rest.partition(b"/")
                host_override = authority.decode("latin-1")
                target = slash + path_part or b"/"
        path, _, query = target.partition(b"?")
        server = self.server
        env: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "RAW_URI": request.target.decode("latin-1"),
            "REQUEST_URI": request.target.decode("latin-1"),
            "SERVER_NAME": server.listen_host,
            "SERVER_PORT": str(server.listen_port),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
            "SERVER_SOFTWARE": "ddpctl",
            "REMOTE_ADDR": self.address[0] if isinstance(self.address, tuple) else "",
            "REMOTE_PORT": str(self.address[1]) if isinstance(self.address, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if server.tls else "http",
            "wsgi.input": _Input(self),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "ddpctl.watch_disconnect": self.watch_disconnect,
        }
        for raw_name, raw_value in request.headers:
            if b"_" in raw_name:
                continue  # see the module docstring
            name = raw_name.decode("ascii").upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                env[name] = value
                continue
            key = "HTTP_" + name
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
            else:
                env[key] = value
        if host_override is not None:
            env["HTTP_HOST"] = host_override
        return env

    def next_body_data(self) -> bytes | None:
        """The next piece of the request body (``None`` at its end); ``RequestRefused``
        (raised out of the application) for a malformed body, ``TimeoutError`` if no byte
        comes for ``body_timeout`` seconds."""
        conn = self.h11
        if conn.they_are_waiting_for_100_continue:
            self._send_raw(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.close_connection = True
                self._refused = RequestRefused(exc.error_status_hint, _h11_reason(exc))
                raise self._refused from None
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if event is not h11.NEED_DATA:
                return None  # EndOfMessage, ConnectionClosed, PAUSED
            try:
                conn.receive_data(self._recv(time.monotonic() + self.limits.body_timeout))
            except TimeoutError:
                self.close_connection = True
                self._refused = RequestRefused(408, "request body not received in time")
                raise self._refused from None

    def watch_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, on another greenlet) if the client closes or resets its
        connection while this response is in progress, before anything is written to it.

        For a long-lived response that waits between writes (a SockJS receiver): a write is
        what tells a gone client otherwise, and a poll may have none to do for a long while.
        As Node's request ``'close'`` event that sockjs-node listens to.  The watch reads
        the socket (through TLS, whose close_notify also ends the stream): the end of the
        stream or an error is the client gone; bytes that come meanwhile (a pipelined
        request) are handed to h11 for after this response, up to ``max_header_size``, then
        the watch stops reading.  The application must not read ``wsgi.input`` once it
        asked for this.  In the environ as ``ddpctl.watch_disconnect``; the watch ends with
        the response.
        """
        if self._watcher is None:
            self._watcher = gevent.spawn(self._watch, callback)

    def _watch(self, callback: Callable[[], None]) -> None:
        while len(self.h11.trailing_data[0]) <= self.limits.max_header_size:
            try:
                data = self.socket.recv(_READ_SIZE)
            except TimeoutError:  # the socket's timeout is the writer's send timeout
                continue
            except OSError as exc:  # reset by the client
                logger.debug("client %s went away mid-response: %s", self._client(), exc)
                data = b""
            if not data:
                logger.debug("client %s closed its connection mid-response", self._client())
                callback()
                return
            self.h11.receive_data(data)

    def handle_request(self, environ: dict[str, Any]) -> None:
        """Answer one request: the WSGI application, or a subclass's own handling."""
        self.run_application(self.server.application, environ)

    # -- the response -------------------------------------------------------------------

    def run_application(self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> None:
        """Call ``app`` (WSGI) and stream its response; log one access line."""
        self._status, self._headers, self._headers_sent = None, [], False
        self._response_length = 0
        self._refused = None
        self._head_only = environ["REQUEST_METHOD"] == "HEAD"
        result: Any = None
        try:
            try:
                result = app(environ, self._start_response)
                self._send_result(result)
            finally:
                if self._watcher is not None:
                    # Dead before this greenlet reads the socket again (one reader at a time).
                    self._watcher.kill()
                    self._watcher = None
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except RequestRefused:
            if not self._headers_sent:
                raise  # answered by run() with the refusal
            self.close_connection = True  # too late for an answer: only the close is left
            logger.info("request from %s refused mid-response", self._client())
        except _ClientGone as exc:
            self.close_connection = True
            logger.debug("client %s went away mid-response: %s", self._client(), exc)
        except Exception:
            self.close_connection = True
            error_log.exception("error answering %s", self._request_line)
            if not self._headers_sent:  # written here, not through h11: it may be the culprit
                self._status, self._headers_sent = "500 Internal Server Error", True
                body = b"" if self._head_only else b"Internal Server Error\n"
                self._response_length = len(body)
                try:
                    self._send_raw(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                                   b"Content-Length: 22\r\nConnection: close\r\n\r\n" + body)
                except _ClientGone:
                    pass  # nothing more can be told to this client
        self._log_access((self._status or "000").split()[0], self._response_length)

    def _start_response(self, status: str, headers: list[tuple[str, str]],
                        exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self._headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise AssertionError("start_response called twice without exc_info")
        self._status, self._headers = status, list(headers)
        return self._write

    def _send_result(self, result: Iterable[bytes]) -> None:
        if isinstance(result, (list, tuple)) and len(result) == 1 and self._status is not None \
                and not any(name.lower() == "content-length" for name, _ in self._headers):
            self._headers.append(("Content-Length", str(len(result[0]))))
        if self._head_only and isinstance(result, FileWrapper):
            result = ()  # HEAD: the headers say it all; do not read the file for nothing
        for chunk in result:
            if chunk:
                self._write(chunk)
        if not self._headers_sent:
            self._write(b"")
        self._send_raw(self.h11.send(h11.EndOfMessage()))

    def _write(self, data: bytes) -> None:
        """Send a body chunk (the headers first, once); ``_ClientGone`` if that fails."""
        out = b""
        if not self._headers_sent:
            if self._refused is not None:
                # The body could not be read (the application answered its own error,
                # e.g. Django's 500): the refusal is the answer.
                raise self._refused
            if self._status is None:
                raise AssertionError("the application wrote before start_response")
            code, _, reason = self._status.partition(" ")
            # A field value has no leading or trailing whitespace (RFC 9110 5.5), which h11
            # enforces; Django's WSGI handler writes each Set-Cookie value with a leading space.
            headers = [(n.encode("latin-1"), v.strip(" \t").encode("latin-1")) for n, v in self._headers]
            if self.server.draining or self.close_connection:
                headers.append((b"Connection", b"close"))
            out = self.h11.send(h11.Response(status_code=int(code), headers=headers,
                                             reason=reason.encode("latin-1")))
            self._headers_sent = True
        if data and not self._head_only:
            self._response_length += len(data)
            out = out + self.h11.send(h11.Data(data=data)) if out else self.h11.send(h11.Data(data=data))
        if out:
            self._send_raw(out)

    def _send_raw(self, data: bytes) -> None:
        """Write ``data`` in slices of 64 KiB, each within ``send_timeout`` (a slow but
        steady reader of a large chunk is not cut; one that stops reading is)."""
        try:
            self.socket.settimeout(self.limits.send_timeout)
            if len(data) <= _SEND_SLICE:
                self.socket.sendall(data)
                return
            view = memoryview(data)
            for start in range(0, len(view), _SEND_SLICE):
                self.socket.sendall(view[start:start + _SEND_SLICE])
        except OSError as exc:
            raise _ClientGone(str(exc) or type(exc).__name__) from None

    def switch_protocols(self, headers: list[tuple[str, str]]) -> Callable[[int], bytes]:
        """Answer ``101 Switching Protocols`` with ``headers``; a read function for the
        new protocol: first the bytes h11 already read after the request head, then the
        socket's (blocking, no timeout).  The connection ends after the caller returns,
        unless the caller took the socket (:meth:`hand_over`)."""
        lines = ["HTTP/1.1 101 Switching Protocols"] + [f"{n}: {v}" for n, v in headers]
        self._status = "101 Switching Protocols"
        self._headers_sent = True
        self._send_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.close_connection = True
        self.socket.settimeout(None)
        pending = [self.h11.trailing_data[0]]
        recv = self.socket.recv

        def read(size: int) -> bytes:
            if pending:
                data = pending.pop()
                if data:
                    return data
            return recv(size)

        return read

    def hand_over(self, read: Callable[[int], bytes]
                  ) -> tuple[Callable[[int], bytes | None], Callable[[], None]]:
        """After :meth:`switch_protocols` (not over TLS: an SSL socket may hold decrypted
        bytes while its file descriptor is not readable): the socket is the caller's, and
        this connection's greenlet ends without closing it (nor does the server).

        Returns ``read_ready(size)``: what ``read`` (switch_protocols' function) gives,
        but ``None`` instead of waiting when the socket has nothing yet; and ``end()``,
        to call once when the upgraded connection is over: it writes the access line and
        closes the socket.  Neither refers to this object (its h11 state and environ are
        freed when its greenlet ends)."""
        if self.server.tls:
            raise ValueError("a TLS socket cannot be read without its greenlet")
        sock = self.socket
        self.handed_over = True
        self.server.handed_over.add(sock)

        def read_ready(size: int) -> bytes | None:
            if first:
                data = read(size) if first.pop() else b""  # bytes h11 read after the head
                if data:
                    return data
            timeout = sock.gettimeout()
            sock.settimeout(0.0)  # gevent: raise rather than wait (no greenlet switch)
            try:
                return sock.recv(size)
            except BlockingIOError:
                return None
            finally:
                sock.settimeout(timeout)

        first = [bool(self.h11.trailing_data[0])]
        client, request_line, started = self._client(), self._request_line, self._started

        def end() -> None:
            _log_access(client, request_line, started, "101", 0)
            try:
                sock.close()
            except OSError as exc:
                logger.debug("closing a socket: %s", exc)

        return read_ready, end

    def log_upgrade_end(self) -> None:
        """The access line of an upgraded connection, once it ended (as pywsgi wrote it)."""
        self._log_access("101", 0)

    def _log_access(self, status: str, length: int) -> None:
        _log_access(self._client(), self._request_line, self._started, status, length)


def _log_access(client: str, request_line: str, started: float, status: str, length: int) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    delta = time.time() - started if started else 0.0
    access_log.info('%s - - [%s] "%s" %s %s %.6f', client,
                    datetime.now().replace(microsecond=0), request_line or "",
                    status, length or "-", delta)


class HTTPServer(StreamServer):
    """A gevent ``StreamServer`` answering HTTP/1.1 with :class:`HTTPConnection` (or a
    subclass), TLS-wrapped by ``ssl_context`` if given (the handshake within the header
    timeout).  Out of file descriptors, gevent's accept loop backs off (up to 1 s) and
    tries again; the kernel's backlog holds the waiting clients."""

    def __init__(self, listener: socket.socket, application: Callable[..., Iterable[bytes]],
                 limits: HTTPLimits, connection_class: type[HTTPConnection] = HTTPConnection,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(listener)
        self.application = application
        self.limits = limits
        self.connection_class = connection_class
        self._ssl_context = ssl_context
        self.tls = ssl_context is not None
        self.draining = False
        self.busy = 0  # requests being answered
        self.connections: set[HTTPConnection] = set()
        self.handed_over: set[socket.socket] = set()  # sockets do_close must leave open
        self.listen_host, self.listen_port = listener.getsockname()[:2]

    def handle(self, client: socket.socket, address: Any) -> None:
        accepted = time.monotonic()
        if client.family in (socket.AF_INET, socket.AF_INET6):
            # Each write goes out at once (a streamed chunk must not wait for the ACK of
            # the previous one, Nagle's algorithm), as node and uvicorn do.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = client
        if self._ssl_context is not None:
            try:
                client.settimeout(self.limits.header_timeout)
                sock = self._ssl_context.wrap_socket(client, server_side=True)
            except (OSError, ValueError) as exc:
                logger.debug("TLS handshake with %s failed: %s", address, exc)
                client.close()
                return
        connection = self.connection_class(self, sock, address)
        connection.server_accepted = accepted
        self.connections.add(connection)
        try:
            connection.run()
        except Exception:
            error_log.exception("the connection from %s failed", address)
        finally:
            self.connections.discard(connection)

    def do_close(self, sock: socket.socket, *args: Any) -> None:
        """After :meth:`handle`: close the socket, unless a connection took it over."""
        if sock in self.handed_over:
            self.handed_over.discard(sock)
            return
        super().do_close(sock, *args)

    def close_idle(self) -> None:
        """Shutdown: close the connections waiting for a request (their greenlets end)."""
        self.draining = True
        for connection in list(self.connections):
            if connection.idle:
                try:
                    connection.socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already disconnected
