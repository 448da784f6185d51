"""The public API used from ``ddp.py`` modules of your apps."""
from .connection_hooks import ConnectionHook, on_connection
from .ddp.ejson import JSDate, ObjectID, RegExp, add_type
from .ddp.errors import MeteorError
from .invocation import ConnectionHandle, MethodInvocation, current_invocation
from .livedata.collection import Collection
from .livedata.publication import Publication
from .livedata.publish import Subscription, publish
from .methods import method
from .ratelimit import each, one_of, rate_limit

__all__ = [
    "MeteorError", "method", "Collection", "Publication", "publish", "Subscription", "current_invocation",
    "MethodInvocation", "ConnectionHandle", "ObjectID", "RegExp", "add_type",
    "JSDate", "rate_limit", "one_of", "each", "on_connection", "ConnectionHook",
]
