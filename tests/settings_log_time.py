"""The test settings with a TIME_ZONE unlike any test machine's (UTC+14): Django applies it
to the process (``os.environ['TZ']``, ``time.tzset()``) when the settings load."""
from test_settings import *  # noqa: F403

TIME_ZONE = "Pacific/Kiritimati"
