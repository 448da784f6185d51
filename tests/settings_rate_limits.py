"""The test settings with rate limit rules and ``ratelimit_app`` (tests/test_rate_limit_live.py).

``TEST_DDPCTL_RATE_LIMITS`` (JSON), if set, replaces ``DDPCTL_RATE_LIMITS``.
"""
import json
import os

from test_settings import *  # noqa: F403

INSTALLED_APPS = INSTALLED_APPS + ["ratelimit_app"]  # noqa: F405
DDPCTL_RATE_LIMITS = [
    # Two subscriptions to echo_params per connection in 10 minutes.
    {"type": "subscription", "name": "echo_params", "connection_id": {"each": True},
     "num_requests": 2, "time_interval": 600_000},
]
if "TEST_DDPCTL_RATE_LIMITS" in os.environ:
    DDPCTL_RATE_LIMITS = json.loads(os.environ["TEST_DDPCTL_RATE_LIMITS"])
