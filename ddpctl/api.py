"""The public API used from ``ddp.py`` modules of your apps."""
from .collection import Collection
from .ddp.ejson import ObjectID, RegExp, add_type
from .ddp.errors import MeteorError
from .invocation import ConnectionHandle, MethodInvocation, current_invocation
from .methods import method
from .publication import Publication
from .publish import Subscription, publish

__all__ = [
    "MeteorError", "method", "Collection", "Publication", "publish", "Subscription", "current_invocation",
    "MethodInvocation", "ConnectionHandle", "ObjectID", "RegExp", "add_type",
]
