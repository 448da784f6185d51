"""Rate limits on DDP methods and subscriptions (Meteor's ``DDPRateLimiter``).

:mod:`.engine` is the pure rule engine, :mod:`.matchers` the matcher values,
:mod:`.config` the Django settings and :mod:`.limiter` the process's limiter,
``rate_limit``, that the server consults before each method and subscription.
"""
from .engine import Event, Reply
from .limiter import DDPRateLimiter, rate_limit
from .matchers import each, one_of

__all__ = ["DDPRateLimiter", "Event", "Reply", "each", "one_of", "rate_limit"]
