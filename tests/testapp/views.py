import os
import time

from django.db import connection
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse


def pg_sleep(request: HttpRequest, seconds: str) -> HttpResponse:
    """A view that holds a database connection for ``seconds``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [float(seconds)])
    return HttpResponse(seconds)


# -- the HTTP layer's tests (tests/test_http.py) ------------------------------------------

def http_echo(request: HttpRequest) -> HttpResponse:
    """The request body's length and SHA-256 (any method)."""
    import hashlib

    body = request.body
    response = HttpResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}", content_type="text/plain")
    response["X-Method"] = request.method
    response["X-Scheme"] = request.scheme
    response["X-Test"] = request.META.get("HTTP_X_TEST", "-")
    return response


http_echo.csrf_exempt = True


def http_cookies(request: HttpRequest) -> HttpResponse:
    """Sets each ``cookie`` query parameter (``name=value``) as a cookie, as Django's
    ``set_cookie`` does (its WSGI handler writes Set-Cookie values with a leading space), and
    answers the ``header`` parameter as ``X-Padded``, with its whitespace as given."""
    response = HttpResponse("ok", content_type="text/plain")
    for item in request.GET.getlist("cookie"):
        name, _, value = item.partition("=")
        response.set_cookie(name, value, samesite="Lax")
    if "header" in request.GET:
        response["X-Padded"] = request.GET["header"]
    return response


def http_sse(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events: one event, then a second once the file ``?release=`` exists
    (with ``?forever``, then more until the response is closed); ``<release>.closed`` is
    written when the generator is closed."""
    release = request.GET["release"]

    forever = "forever" in request.GET

    def events():
        try:
            yield b"data: first\n\n"
            deadline = time.monotonic() + 30
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
            yield b"data: second\n\n"
            while forever and time.monotonic() < deadline:  # until the server closes us
                time.sleep(0.02)
                yield b"data: tick\n\n"
        finally:
            with open(release + ".closed", "w"):
                pass

    return StreamingHttpResponse(events(), content_type="text/event-stream")


def http_stream_db(request: HttpRequest) -> StreamingHttpResponse:
    """A streaming body whose every chunk runs a query (``?chunks=N``); ``?fail=I`` raises
    before chunk I."""

    fail_at = int(request.GET.get("fail", "-1"))

    def rows():
        for i in range(int(request.GET.get("chunks", "3"))):
            if i == fail_at:
                raise RuntimeError("the stream broke")
            with connection.cursor() as cursor:
                cursor.execute("SELECT %s + 1", [i])
                yield f"{cursor.fetchone()[0]}\n".encode()

    return StreamingHttpResponse(rows(), content_type="text/plain")


def http_file(request: HttpRequest) -> FileResponse:
    """The file named by the server's ``DDPCTL_TEST_BIG_FILE`` environment variable, after a
    query (as a permission check would)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return FileResponse(open(os.environ["DDPCTL_TEST_BIG_FILE"], "rb"))


def http_path(request: HttpRequest, rest: str) -> HttpResponse:
    """The decoded path below ``testapp/http/path/``, as Django saw it."""
    return HttpResponse(rest.encode("utf-8"), content_type="text/plain; charset=utf-8")
