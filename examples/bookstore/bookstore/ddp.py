"""The bookstore's DDP API: collections, publications and methods (found by ddpctl at start)."""
from ddpctl.api import Collection, MeteorError, Publication, method

from .models import Author, Book, Genre


class Authors(Collection):
    model = Author


class Books(Collection):
    model = Book


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


def _book(book_id: object) -> Book:
    try:
        return Book.objects.get(pk=int(book_id))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MeteorError(400, "Book ids are integers") from None
    except Book.DoesNotExist:
        raise MeteorError(404, "Book not found") from None


@method("books.add")
def add_book(title: str, author_email: str, pages: int = 0) -> int:
    """Add a book (creating its author from the email if needed); returns its id."""
    if not isinstance(title, str) or not title.strip():
        raise MeteorError(400, "A book needs a title")
    author, _ = Author.objects.get_or_create(
        email=author_email, defaults={"name": author_email.split("@")[0].title()})
    return Book.objects.create(title=title.strip(), author=author, pages=pages).pk


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
