from django.conf import settings
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=200)
    email = models.EmailField(unique=True)

    def __str__(self) -> str:
        return self.name


class Genre(models.Model):
    name = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, related_name="books", on_delete=models.CASCADE)
    # Database defaults too, so an INSERT from psql may leave them out.
    pages = models.PositiveIntegerField(default=0, db_default=0)
    published = models.DateField(null=True, blank=True)
    blurb = models.TextField(blank=True, default="", db_default="")
    genres = models.ManyToManyField(Genre, related_name="books", blank=True)
    # Who added the book through ``books.add`` (None: added logged out, or by SQL/admin).
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="books", null=True, blank=True,
                              on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.title
