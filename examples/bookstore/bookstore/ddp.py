"""The bookstore's DDP API: collections, publications and methods (found by ddpctl at start).

Logins come from ``ddpctl.accounts`` (``login``, ``logout``, the ``users`` document).  A book
remembers who added it (``Book.owner``, set by ``books.add``); that is nobody else's business,
so the public ``bookstore.book`` documents leave it out, and the ``MyBooks`` publication sends
the logged-in user's own books in a collection of their own, ``my_books`` (like a Meteor
publication that calls ``this.added("my_books", ...)``), so a page can list them apart.
"""
from typing import Any

from ddpctl.api import Collection, MeteorError, Publication, current_invocation, method

from .models import Author, Book, Genre


class Authors(Collection):
    model = Author


class Books(Collection):
    model = Book
    exclude = ["owner"]


class MyBooksCollection(Books, register=False):
    """Book rows as the ``my_books`` collection (reached through ``MyBooks`` only: a model
    has one registered Collection, ``Books``, whose table change capture follows)."""

    name = "my_books"


MY_BOOKS = MyBooksCollection()


class Genres(Collection):
    model = Genre


class AllBooks(Publication):
    queries = [Author.objects.all(), Book.objects.all()]


class BooksByAuthorEmail(Publication):
    def get_queries(self, email):
        if not isinstance(email, str):
            raise MeteorError(400, "Match failed", "email must be a string")
        return [Book.objects.filter(author__email=email), Author.objects.filter(email=email)]


class AllGenres(Publication):
    queries = [Genre.objects.all()]


class MyBooks(Publication):
    """The books the connection's user added, in ``my_books`` (none when logged out).

    It reads the connection's user, so each user gets an observer of their own; at login
    and logout ddpctl runs it again and the client gets the differences.
    """

    def get_queries(self) -> list[Any]:
        if self.user_id is None:
            return []
        return [(Book.objects.filter(owner_id=self.user_id), MY_BOOKS)]


def _book(book_id: object) -> Book:
    try:
        return Book.objects.get(pk=int(book_id))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MeteorError(400, "Book ids are integers") from None
    except Book.DoesNotExist:
        raise MeteorError(404, "Book not found") from None


@method("books.add")
def add_book(title: str, author_email: str, pages: int = 0) -> int:
    """Add a book (creating its author from the email if needed); returns its id.

    The book's owner is the caller's user (``None`` when logged out).
    """
    if not isinstance(title, str) or not title.strip():
        raise MeteorError(400, "A book needs a title")
    author, _ = Author.objects.get_or_create(
        email=author_email, defaults={"name": author_email.split("@")[0].title()})
    owner_id = current_invocation().user_id
    return Book.objects.create(title=title.strip(), author=author, pages=pages, owner_id=owner_id).pk


@method("books.rename")
def rename_book(book_id: int, title: str) -> None:
    book = _book(book_id)
    book.title = title
    book.save(update_fields=["title"])


@method("books.delete")
def delete_book(book_id: int) -> None:
    _book(book_id).delete()


@method("books.count")
def count_books() -> int:
    return Book.objects.count()
