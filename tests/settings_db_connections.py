"""The test settings with ``DDPCTL_DB_CONNECTIONS`` set (its value, JSON, from the environment)."""
import json
import os

from test_settings import *  # noqa: F403

DDPCTL_DB_CONNECTIONS = json.loads(os.environ.get("TEST_DDPCTL_DB_CONNECTIONS", "3"))
