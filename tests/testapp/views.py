from django.db import connection
from django.http import HttpRequest, HttpResponse


def pg_sleep(request: HttpRequest, seconds: str) -> HttpResponse:
    """A view that holds a database connection for ``seconds``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [float(seconds)])
    return HttpResponse(seconds)
