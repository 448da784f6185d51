"""The bookstore example: the Django project every README example and test uses."""
