"""``Meteor.Error`` objects and the protocol-level error reasons Meteor's server sends."""
from __future__ import annotations

import logging
from typing import Any

__all__ = [
    "MeteorError", "internal_server_error", "match_failed", "BAD_REQUEST", "MUST_CONNECT_FIRST",
    "ALREADY_CONNECTED", "MALFORMED_SUBSCRIPTION", "MALFORMED_METHOD", "PARSE_ERROR",
]

# Reasons of ``{"msg": "error", "reason": ...}`` (livedata_server.js).
BAD_REQUEST = "Bad request"
MUST_CONNECT_FIRST = "Must connect first"
ALREADY_CONNECTED = "Already connected"
MALFORMED_SUBSCRIPTION = "Malformed subscription"
MALFORMED_METHOD = "Malformed method invocation"
PARSE_ERROR = "Parse error"

_MISSING = object()

logger = logging.getLogger(__name__)


class MeteorError(Exception):
    """An error the client is meant to see, like ``new Meteor.Error(error, reason, details)``.

    Raise it from a method or publication and the client receives it as given; any other
    exception reaches the client as ``500 Internal server error``.  ``error`` is a string or
    number code (``404``, ``"not-authorized"``), ``reason`` a human-readable text and
    ``details`` any EJSON value.  The wire object (:meth:`to_json`) has, in this order,
    ``isClientSafe: true``, ``error``, ``reason`` and ``details`` (each only when given),
    ``message`` (``"reason [error]"``) and ``errorType: "Meteor.Error"``.
    """

    def __init__(self, error: str | int, reason: str | None = None, details: Any = _MISSING) -> None:
        self.error = error
        self.reason = reason
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Meteor's ``message``: ``"reason [error]"``, or ``"[error]"`` without a reason."""
        return f"{self.reason} [{self.error}]" if self.reason else f"[{self.error}]"

    def to_json(self) -> dict[str, Any]:
        """The wire object, keys in Meteor's order."""
        obj: dict[str, Any] = {"isClientSafe": True, "error": self.error}
        if self.reason is not None:
            obj["reason"] = self.reason
        if self.details is not _MISSING:
            obj["details"] = self.details
        obj["message"] = self.message
        obj["errorType"] = "Meteor.Error"
        return obj

    def __repr__(self) -> str:
        return f"MeteorError({self.error!r}, {self.reason!r})"


def internal_server_error() -> MeteorError:
    """What the client sees for an exception that is not a ``MeteorError``."""
    return MeteorError(500, "Internal server error")


def match_failed(detail: str) -> MeteorError:
    """Params that do not fit: ``400 Match failed``, as Meteor's client receives a failed
    ``check()`` (``Match.Error``'s ``sanitizedError``: no details, message ``"Match failed
    [400]"``).  ``detail`` (what did not fit: Python's binding message, the expected shape)
    is logged here at INFO level, never sent: it may name what the server expects."""
    logger.info("Match failed: %s", detail)
    return MeteorError(400, "Match failed")
