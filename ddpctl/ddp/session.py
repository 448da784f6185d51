"""The DDP session state machine (livedata_server.js ``Server``/``Session``), free of I/O.

A transport feeds each received frame to :meth:`Session.receive`.  The answer is a list of
:class:`Send`, :class:`Close` and :class:`Enqueue` items: sends and closes go out at once
(pings are answered even while a method runs, like Meteor); an ``Enqueue`` holds a
``sub``/``unsub``/``method`` message that the server passes to :meth:`Session.process`
strictly in arrival order.  ``process`` returns the replies it can decide alone plus at most
one piece of work (:class:`MethodCall`, :class:`SubscriptionStart`, :class:`SubscriptionStop`)
whose outcome the server reports back through ``method_*`` / ``subscription_*`` calls.

No frame raises: each gets Meteor's reply (``error`` with ``reason`` and, when the frame
was a JSON object, ``offendingMessage``) or is ignored where Meteor ignores it, and costs
one warning line in the log (the exception too, at debug level).
"""
from __future__ import annotations

import logging
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..redaction import redact_message, redact_text
from . import errors
from .errors import MeteorError
from .mergebox import SessionView
from .messages import EncodeError, ParseError, encoded_size, parse
from .random import random_id

__all__ = [
    "SUPPORTED_VERSIONS", "Session", "Send", "Close", "Enqueue", "MethodCall",
    "SubscriptionStart", "SubscriptionStop",
]

SUPPORTED_VERSIONS = ("1", "pre2", "pre1")
Message = dict[str, Any]
logger = logging.getLogger(__name__)
BAD_FRAMES_LOGGED = 20  # bad frames of one session logged as warnings; the rest at debug level
_excerpt = reprlib.Repr()  # a bad frame in the log: a bounded excerpt, whatever its size
_excerpt.maxstring = _excerpt.maxother = 160
_excerpt.maxlevel, _excerpt.maxdict, _excerpt.maxlist = 4, 8, 8


@dataclass(slots=True)
class Send:
    message: Message


@dataclass(slots=True)
class Close:
    """Close the transport (after ``failed``)."""

    reason: str


@dataclass(slots=True)
class Enqueue:
    message: Message


@dataclass(slots=True)
class MethodCall:
    id: str
    name: str
    params: list[Any]
    random_seed: str | None


@dataclass(slots=True)
class SubscriptionStart:
    id: str
    name: str
    params: list[Any]


@dataclass(slots=True)
class SubscriptionStop:
    id: str


Work = MethodCall | SubscriptionStart | SubscriptionStop


@dataclass
class Processed:
    """What :meth:`Session.process` decided: messages to send now, then work to run."""

    messages: list[Message] = field(default_factory=list)
    work: Work | None = None


def _negotiate(client_support: list[str]) -> str:
    return next((v for v in client_support if v in SUPPORTED_VERSIONS), SUPPORTED_VERSIONS[0])


def _sub_handle(sub_id: str) -> str:
    return "N" + sub_id


class Session:
    """One client's DDP session: handshake, validation, subscriptions and the mergebox."""

    def __init__(self, *, has_method: Callable[[str], bool],
                 has_publication: Callable[[str], bool],
                 session_id_factory: Callable[[], str] = random_id,
                 max_subscriptions: int | None = None, max_params_size: int | None = None,
                 rate_limit: Callable[[str, str], MeteorError | None] | None = None) -> None:
        """``max_subscriptions``: most active subscriptions; ``max_params_size``: most bytes
        of a subscription's EJSON params.  A ``sub`` past either gets ``nosub`` with error
        429 or 413; ``None`` means no cap.  ``rate_limit(type, name)`` (``type``:
        ``"method"`` or ``"subscription"``) is asked, where Meteor asks its rate limiter,
        before a known method or a new subscription runs: an error it returns is the
        method's ``result`` error or the subscription's ``nosub`` error."""
        self._has_method = has_method
        self._rate_limit = rate_limit
        self._has_publication = has_publication
        self._session_id_factory = session_id_factory
        self.max_subscriptions = max_subscriptions
        self.max_params_size = max_params_size
        self.id: str | None = None
        self.version: str | None = None
        self.view = SessionView()
        self.subscriptions: dict[str, str] = {}  # sub id -> publication name
        self.universal: set[str] = set()  # ids (in ``subscriptions``) of universal publications
        self._ready: set[str] = set()
        self.failed = False
        self._bad_logged = 0  # bad frames logged so far (capped: a flood must not flood the log)

    @property
    def connected(self) -> bool:
        return self.id is not None

    @property
    def heartbeats(self) -> bool:
        """Whether the negotiated version has ping/pong (``pre1`` does not)."""
        return self.connected and self.version != "pre1"

    # -- frames from the transport -------------------------------------------------------

    def receive(self, text: str | bytes) -> list[Send | Close | Enqueue]:
        if self.failed:
            return []  # after ``failed`` the client's pipelined frames are ignored
        try:
            msg = parse(text)
        except ParseError as exc:
            self._log_bad(errors.PARSE_ERROR, text, exc)
            return [Send({"msg": "error", "reason": errors.PARSE_ERROR})]
        if msg is None:
            self._log_bad(errors.BAD_REQUEST, text)
            return [Send({"msg": "error", "reason": errors.BAD_REQUEST})]
        kind = msg.get("msg")
        if not kind:
            return [self._error(errors.BAD_REQUEST, msg)]
        if kind == "connect":
            if self.connected:
                return [self._error(errors.ALREADY_CONNECTED, msg)]
            return self._connect(msg)
        if not self.connected:
            return [self._error(errors.MUST_CONNECT_FIRST, msg)]
        if self.version != "pre1":
            if kind == "ping":
                pong: Message = {"msg": "pong"}
                if "id" in msg:
                    if not isinstance(msg["id"], str):
                        # Meteor's stringifyDDP throws "Message id is not a string": no pong.
                        self._log_bad("ping id is not a string; ignored", msg)
                        return []
                    pong["id"] = msg["id"]
                return [Send(pong)]
            if kind == "pong":
                return []
        return [Enqueue(msg)]

    def _error(self, reason: str, offending: Message) -> Send:
        self._log_bad(reason, offending)
        return Send({"msg": "error", "reason": reason, "offendingMessage": offending})

    def _log_bad(self, what: str, frame: Any, exc: Exception | None = None) -> None:
        """One warning line per bad frame (the exception's traceback only at debug level), for
        the first :data:`BAD_FRAMES_LOGGED` of a session; later ones at debug level only, so
        a client sending a flood of bad frames cannot flood the log."""
        self._bad_logged += 1
        if self._bad_logged > BAD_FRAMES_LOGGED:
            level = logging.DEBUG
        else:
            level = logging.WARNING
        if not logger.isEnabledFor(level):
            return
        suffix = ("; further bad frames of this session are logged at debug level only"
                  if self._bad_logged == BAD_FRAMES_LOGGED else "")
        shown = redact_text(frame) if isinstance(frame, str) else redact_message(frame)  # no secrets
        logger.log(level, "session %s: %s%s: %s%s", self.id or "-", what, f" ({exc})" if exc else "",
                   _excerpt.repr(shown), suffix,
                   exc_info=exc if exc is not None and logger.isEnabledFor(logging.DEBUG) else None)

    def _connect(self, msg: Message) -> list[Send | Close | Enqueue]:
        version, support = msg.get("version"), msg.get("support")
        if not (isinstance(version, str) and isinstance(support, list)
                and all(isinstance(v, str) for v in support) and version in support):
            return self._fail(SUPPORTED_VERSIONS[0])
        negotiated = _negotiate(support)
        if version != negotiated:
            return self._fail(negotiated)
        # ``msg.session`` is ignored: like Meteor, every connect starts a new session.
        self.id = self._session_id_factory()
        self.version = version
        return [Send({"msg": "connected", "session": self.id})]

    def _fail(self, version: str) -> list[Send | Close | Enqueue]:
        self.failed = True
        return [Send({"msg": "failed", "version": version}), Close("version negotiation failed")]

    # -- queued messages, in order -------------------------------------------------------

    def process(self, msg: Message) -> Processed:
        kind = msg.get("msg")
        if kind == "sub":
            return self._sub(msg)
        if kind == "unsub":
            return self._unsub(msg)
        if kind == "method":
            return self._method(msg)
        return Processed([self._error(errors.BAD_REQUEST, msg).message])

    def _sub(self, msg: Message) -> Processed:
        sub_id, name, params = msg.get("id"), msg.get("name"), msg.get("params", [])
        if not isinstance(sub_id, str) or not isinstance(name, str) or not isinstance(params, list):
            return Processed([self._error(errors.MALFORMED_SUBSCRIPTION, msg).message])
        if not self._has_publication(name):
            error = MeteorError(404, f"Subscription '{name}' not found")
            return Processed([{"msg": "nosub", "id": sub_id, "error": error.to_json()}])
        if sub_id in self.subscriptions:
            return Processed()  # idempotent: clients resend their subs after a reconnect
        if self._rate_limit is not None:
            refused = self._rate_limit("subscription", name)
            if refused is not None:
                return Processed([{"msg": "nosub", "id": sub_id, "error": refused.to_json()}])
        refusal = self._refuse_subscription(params)
        if refusal is not None:
            self._log_bad(refusal.message, msg)
            return Processed([{"msg": "nosub", "id": sub_id, "error": refusal.to_json()}])
        self.subscriptions[sub_id] = name
        return Processed(work=SubscriptionStart(sub_id, name, params))

    def start_universal(self, name: str) -> SubscriptionStart:
        """A universal publication (``Meteor.publish(null, ...)``) for this session: no
        ``sub``, no ``ready``, no ``nosub``; its id (``universal:<random id>``) is one a client
        ``sub`` cannot take over (ignored) nor ``unsub`` (only ``nosub``)."""
        sub_id = f"universal:{random_id()}"
        while sub_id in self.subscriptions:
            sub_id = f"universal:{random_id()}"
        self.universal.add(sub_id)
        self.subscriptions[sub_id] = name
        return SubscriptionStart(sub_id, name, [])

    def _refuse_subscription(self, params: list[Any]) -> MeteorError | None:
        """The error for a ``sub`` past this session's caps, else ``None``."""
        limit = self.max_subscriptions
        if limit is not None and len(self.subscriptions) - len(self.universal) >= limit:
            return MeteorError(429, f"Too many subscriptions (at most {limit} per connection)")
        limit = self.max_params_size
        if limit is not None:
            try:
                size = encoded_size(params)
            except EncodeError:  # parse() only yields encodable values; be safe anyway
                size = limit + 1
            if size > limit:
                return MeteorError(413, f"Subscription params too large ({size} bytes, at most {limit})")
        return None

    def _unsub(self, msg: Message) -> Processed:
        sub_id = msg.get("id")
        if "id" in msg and not isinstance(sub_id, str):
            # Meteor's stringifyDDP throws "Message id is not a string": no nosub.
            self._log_bad("unsub id is not a string; ignored", msg)
            return Processed()
        out = Processed()
        if isinstance(sub_id, str) and sub_id in self.subscriptions and sub_id not in self.universal:
            out.messages = self._forget_subscription(sub_id)
            out.work = SubscriptionStop(sub_id)
        nosub: Message = {"msg": "nosub"}
        if "id" in msg:
            nosub["id"] = sub_id
        out.messages.append(nosub)
        return out

    def _method(self, msg: Message) -> Processed:
        method_id, name, params = msg.get("id"), msg.get("method"), msg.get("params", [])
        seed = msg.get("randomSeed")
        if (not isinstance(method_id, str) or not isinstance(name, str)
                or not isinstance(params, list) or ("randomSeed" in msg and not isinstance(seed, str))):
            return Processed([self._error(errors.MALFORMED_METHOD, msg).message])
        if not self._has_method(name):
            error = MeteorError(404, f"Method '{name}' not found")
            return Processed([{"msg": "result", "id": method_id, "error": error.to_json()},
                              {"msg": "updated", "methods": [method_id]}])
        call = MethodCall(method_id, name, params, seed)
        if self._rate_limit is not None:
            refused = self._rate_limit("method", name)
            if refused is not None:
                return Processed(self.method_failed(call, refused))
        return Processed(work=call)

    # -- outcomes of work ----------------------------------------------------------------

    def method_returned(self, call: MethodCall, result: Any = None) -> list[Message]:
        """``updated`` then ``result`` (``result`` omitted for ``None``, Meteor's undefined)."""
        reply: Message = {"msg": "result", "id": call.id}
        if result is not None:
            reply["result"] = result
        return [{"msg": "updated", "methods": [call.id]}, reply]

    def method_failed(self, call: MethodCall, error: MeteorError) -> list[Message]:
        return [{"msg": "updated", "methods": [call.id]},
                {"msg": "result", "id": call.id, "error": error.to_json()}]

    def subscription_added(self, sub_id: str, collection: str, doc_id: str,
                           fields: Mapping[str, Any], *, owned: bool = False) -> list[Message]:
        """``owned``: ``fields`` never changes any more (an observer's document); the
        mergebox may keep that dict rather than a copy (:meth:`SessionView.added`)."""
        if sub_id not in self.subscriptions:
            return []
        return self.view.added(_sub_handle(sub_id), collection, doc_id, fields, owned=owned)

    def subscription_added_many(self, sub_id: str, collection: str,
                                docs: list[tuple[str, Mapping[str, Any]]]) -> list[list[Message] | None]:
        """:meth:`SessionView.added_many` for a subscription's documents (fields that never
        change any more): per document ``None`` if the client gets it whole as given, else
        the messages to send (none for a subscription that is gone)."""
        if sub_id not in self.subscriptions:
            return [[] for _ in docs]
        return self.view.added_many(_sub_handle(sub_id), collection, docs)

    def subscription_changed(self, sub_id: str, collection: str, doc_id: str,
                             fields: Mapping[str, Any] | None = None,
                             cleared: Iterable[str] = ()) -> list[Message]:
        if sub_id not in self.subscriptions:
            return []
        return self.view.changed(_sub_handle(sub_id), collection, doc_id, fields, cleared)

    def subscription_diffed(self, sub_id: str, op: str, collection: str, doc_id: str,
                            fields: Mapping[str, Any] | None = None,
                            cleared: list[str] | None = None, before: Mapping[str, Any] | None = None,
                            after: Mapping[str, Any] | None = None) -> list[Message] | None:
        """A message an observer diffed against what it sent this subscription (see
        :meth:`SessionView.apply_diffed`): ``None`` if the client gets it as it is, else the
        messages to send instead (none for a subscription that is gone)."""
        handle = self.diffed_handle(sub_id)
        if handle is None:
            return []
        return self.view.apply_diffed(handle, op, collection, doc_id, fields, cleared, before, after)

    def diffed_handle(self, sub_id: str) -> str | None:
        """The mergebox handle under which to pass ``sub_id``'s diffed messages straight to
        :meth:`SessionView.apply_diffed` (a batch of them: one lookup, not one per message),
        or ``None`` if the subscription is gone (its messages are dropped)."""
        return _sub_handle(sub_id) if sub_id in self.subscriptions else None

    def subscription_removed(self, sub_id: str, collection: str, doc_id: str) -> list[Message]:
        if sub_id not in self.subscriptions:
            return []
        return self.view.removed(_sub_handle(sub_id), collection, doc_id)

    def subscription_ready(self, sub_id: str) -> list[Message]:
        if sub_id not in self.subscriptions or sub_id in self._ready or sub_id in self.universal:
            return []
        self._ready.add(sub_id)
        return [{"msg": "ready", "subs": [sub_id]}]

    def subscription_failed(self, sub_id: str, error: MeteorError) -> list[Message]:
        """The publication raised: withdraw its documents, then ``nosub`` with the error."""
        if sub_id not in self.subscriptions:
            return []
        universal = sub_id in self.universal
        out = self._forget_subscription(sub_id)
        if not universal:
            out.append({"msg": "nosub", "id": sub_id, "error": error.to_json()})
        return out

    def subscription_stopped(self, sub_id: str) -> list[Message]:
        """The publication stopped itself (``this.stop()``)."""
        if sub_id not in self.subscriptions:
            return []
        universal = sub_id in self.universal
        out = self._forget_subscription(sub_id)
        if not universal:
            out.append({"msg": "nosub", "id": sub_id})
        return out

    def documents_held(self, sub_id: str) -> dict[str, int]:
        """How many documents of each collection a subscription publishes."""
        return self.view.held(_sub_handle(sub_id))

    def forget_documents(self, sub_id: str) -> list[Message]:
        """Withdraw a subscription's documents but keep it active (it is about to re-run)."""
        return self.view.remove_subscription(_sub_handle(sub_id))

    def _forget_subscription(self, sub_id: str) -> list[Message]:
        del self.subscriptions[sub_id]
        self.universal.discard(sub_id)
        self._ready.discard(sub_id)
        return self.view.remove_subscription(_sub_handle(sub_id))
