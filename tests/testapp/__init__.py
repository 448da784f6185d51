"""A Django app with methods and publications that only the tests use."""
