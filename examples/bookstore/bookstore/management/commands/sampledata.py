"""``python manage.py sampledata``: a few authors, genres and books to look at.

Idempotent and non-destructive: authors are matched by e-mail, genres by name, books by
title and author; what exists is left as it is, only what is missing is added.
"""
from datetime import date

from django.core.management.base import BaseCommand
from django.db import transaction

from ...models import Author, Book, Genre

AUTHORS = {
    "ursula@example.com": "Ursula K. Le Guin",
    "frank@example.com": "Frank Herbert",
    "octavia@example.com": "Octavia E. Butler",
}
# (title, author e-mail, pages, published, genres, blurb)
BOOKS = [
    ("A Wizard of Earthsea", "ursula@example.com", 183, date(1968, 11, 1), ["Fantasy"],
     "A boy with a gift for magic looses a shadow on the world."),
    ("The Left Hand of Darkness", "ursula@example.com", 304, date(1969, 3, 1), ["Science fiction"],
     "An envoy on a winter planet whose people have no fixed sex."),
    ("The Dispossessed", "ursula@example.com", 387, date(1974, 5, 1), ["Science fiction"],
     "A physicist between an anarchist moon and its capitalist planet."),
    ("Dune", "frank@example.com", 412, date(1965, 8, 1), ["Science fiction", "Classic"],
     "Spice, sandworms and the fall of a noble house."),
    ("Kindred", "octavia@example.com", 264, date(1979, 6, 1), ["Science fiction", "Classic"],
     "A writer is pulled back in time to an antebellum plantation."),
    ("Parable of the Sower", "octavia@example.com", 345, date(1993, 10, 1), ["Science fiction"],
     "A young woman founds a new faith as California collapses."),
]


class Command(BaseCommand):
    help = ("Add the bookstore's sample authors, genres and books (only those missing: "
            "running it again changes nothing).")

    @transaction.atomic
    def handle(self, *args, **options):
        added = {"authors": 0, "genres": 0, "books": 0}
        present = 0
        authors = {}
        for email, name in AUTHORS.items():
            authors[email], created = Author.objects.get_or_create(email=email, defaults={"name": name})
            added["authors"] += created
            present += not created
        genres = {}
        for name in sorted({genre for book in BOOKS for genre in book[4]}):
            genres[name], created = Genre.objects.get_or_create(name=name)
            added["genres"] += created
            present += not created
        for title, email, pages, published, genre_names, blurb in BOOKS:
            book, created = Book.objects.get_or_create(
                title=title, author=authors[email],
                defaults={"pages": pages, "published": published, "blurb": blurb})
            if created:
                book.genres.set([genres[name] for name in genre_names])
                added["books"] += 1
            present += not created
        self.stdout.write(f"Sample data: added {added['authors']} author(s), {added['genres']} "
                          f"genre(s) and {added['books']} book(s); {present} were already there.")
