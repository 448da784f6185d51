"""The test settings plus ``adversarial_app`` (tests/test_adversarial_11_12.py)."""
from test_settings import *  # noqa: F403

INSTALLED_APPS = INSTALLED_APPS + ["adversarial_app"]  # noqa: F405
