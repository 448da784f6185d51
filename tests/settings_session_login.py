"""The test settings with ``DDPCTL_SESSION_LOGIN`` on."""
from test_settings import *  # noqa: F403

DDPCTL_SESSION_LOGIN = True
