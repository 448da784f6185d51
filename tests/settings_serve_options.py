"""The test settings plus Django settings from ``TEST_DDPCTL_SETTINGS`` (a JSON object), for
tests of ``ddpctl serve`` options set in settings."""
import json
import os

from test_settings import *  # noqa: F403

globals().update(json.loads(os.environ.get("TEST_DDPCTL_SETTINGS", "{}")))
