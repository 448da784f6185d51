from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

from .models import Book


def index(request: HttpRequest) -> HttpResponse:
    books = Book.objects.select_related("author").order_by("title")[:100]
    rows = "".join(f"<li>{escape(b.title)} by {escape(b.author.name)}</li>" for b in books)
    return HttpResponse(
        "<!doctype html><title>Bookstore</title><h1>Bookstore</h1>"
        f"<p>{Book.objects.count()} book(s). DDP clients connect to <code>/websocket</code>; "
        "the live front end is at <a href=\"/\">/</a>.</p>"
        f"<ul>{rows}</ul>")
