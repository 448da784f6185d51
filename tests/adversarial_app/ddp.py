"""Publications that a new user might write (tests/test_adversarial_11_12.py)."""
from bookstore.models import Book
from django.db.models import ExpressionWrapper, F, FloatField

from ddpctl.api import Collection, Publication

from .models import Item


class Items(Collection):
    model = Item


class ItemsByFirstTag(Publication):
    """Items whose JSON list ``data["labels"]`` starts with ``label``... via ``data__0``."""

    def get_queries(self, label):
        return [Item.objects.filter(data__0=label)]


class BooksScoredAbove(Publication):
    """Books whose ``pages * factor`` exceeds ``threshold`` (a float factor)."""

    def get_queries(self, factor, threshold):
        score = ExpressionWrapper(F("pages") * factor, output_field=FloatField())
        return [Book.objects.alias(score=score).filter(score__gt=threshold)]


class LongestBookPerAuthor(Publication):
    """For each author with an email under ``domain``, the book with the most pages."""

    def get_queries(self, domain):
        return [Book.objects.filter(author__email__endswith=domain)
                .order_by("author_id", "-pages", "id").distinct("author_id")]


class BooksOfProlificAuthors(Publication):
    """Books of authors who wrote a book longer than ``pages``: the book table read twice."""

    def get_queries(self, pages):
        return [Book.objects.filter(author__books__pages__gt=pages).distinct()]


class ItemsWithAnyTag(Publication):
    def get_queries(self, tags):
        return [Item.objects.filter(tags__overlap=tags).order_by("name")]


class TopItems(Publication):
    """The ``count`` best-scored items after the first ``skip``."""

    def get_queries(self, skip, count):
        return [Item.objects.order_by("-score", "name")[skip:skip + count]]
