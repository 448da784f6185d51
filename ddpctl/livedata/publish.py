"""Low-level publications, Meteor's ``Meteor.publish(name, handler)``.

The handler receives a :class:`Subscription` (Meteor's ``this`` in a publish function)
and the subscription's params, and publishes documents by hand::

    @publish("server_time")
    def server_time(sub):
        sub.added("clock", "now", {"at": datetime.now(timezone.utc)})
        sub.ready()

Model-backed publications build on this.
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any, Protocol

from ..ddp.ejson import to_json_value
from ..ddp.errors import MeteorError, internal_server_error, match_failed
from ..ddp.messages import added_text
from ..invocation import ConnectionHandle, call_user_code
from ..redaction import SensitiveParams, declare_sensitive, forget_sensitive, redact_params
from ..values import to_ddp_value

__all__ = ["Subscription", "SubscriptionSink", "PreparedMessage", "PublicationRegistry", "publications",
           "publish", "Documents", "SharedDocuments", "AddedTexts", "utf8_size"]

logger = logging.getLogger(__name__)


class PreparedMessage:
    """A data message that many subscriptions send alike; serialized at most once.

    ``before``/``after``: for a ``changed`` an observer diffed, its whole document before
    and after (dicts it never changes again): a session that holds ``before`` itself for a
    document only this subscription publishes takes ``after`` as it is
    (:meth:`ddpctl.ddp.mergebox.SessionView.apply_diffed`)."""

    __slots__ = ("op", "collection", "id", "fields", "cleared", "before", "after", "_text", "_size")

    def __init__(self, op: str, collection: str, doc_id: str, fields: Mapping[str, Any] | None = None,
                 cleared: list[str] | None = None, before: Mapping[str, Any] | None = None,
                 after: Mapping[str, Any] | None = None) -> None:
        self.op, self.collection, self.id = op, collection, doc_id
        self.fields, self.cleared = fields, cleared
        self.before, self.after = before, after
        self._text: str | None = None
        self._size = -1

    @property
    def text(self) -> str:
        if self._text is None:
            from ..ddp.messages import stringify

            msg: dict[str, Any] = {"msg": self.op, "collection": self.collection, "id": self.id}
            if self.fields:
                msg["fields"] = self.fields
            if self.cleared:
                msg["cleared"] = self.cleared
            self._text = stringify(msg)
        return self._text

    @property
    def size(self) -> int:
        """Bytes of ``text`` in UTF-8 (what it weighs in a send buffer)."""
        if self._size < 0:
            self._size = utf8_size(self.text)
        return self._size

    def same_as(self, msg: Mapping[str, Any]) -> bool:
        """True if the mergebox let this message through unchanged."""
        return (msg["msg"] == self.op and msg["id"] == self.id and msg["collection"] == self.collection
                and msg.get("fields", {}) == (self.fields or {})
                and msg.get("cleared", []) == (self.cleared or []))


def utf8_size(text: str) -> int:
    """``len(text.encode())`` without encoding ASCII text (``str.isascii`` is O(1))."""
    return len(text) if text.isascii() else len(text.encode())


Documents = list[tuple[str, Mapping[str, Mapping[str, Any]]]]
"""An observer's documents for a new subscriber: ``[(collection name, {id: fields})]``
(each item may be a :class:`SharedDocuments`)."""


class AddedTexts:
    """The text of each document's ``added`` message in one collection, encoded once and
    shared by the subscribers an observer welcomes (issue 14: the first subscriber's work
    is reused by later ones).  A text stays valid while the document's fields are the very
    same object (observers replace, never change, a document's fields dict); it costs about
    the size of the text per document, freed with the observer."""

    __slots__ = ("collection", "_texts", "_of")

    def __init__(self, collection: str) -> None:
        self.collection = collection
        # Two dicts, not a (fields, text) tuple per document: one container fewer for the
        # garbage collector to walk per document held.
        self._texts: dict[str, str] = {}
        self._of: dict[str, Mapping[str, Any]] = {}  # the fields each text was encoded from

    def text(self, doc_id: str, fields: Mapping[str, Any]) -> str:
        """``{"msg":"added","collection":...,"id":doc_id,"fields":fields}`` (no ``fields`` when
        empty), as :func:`~ddpctl.ddp.messages.stringify` writes it
        (:func:`~ddpctl.ddp.messages.added_text`); ``EncodeError`` if it cannot be encoded
        (not kept)."""
        if self._of.get(doc_id) is fields:
            return self._texts[doc_id]
        text = added_text(self.collection, doc_id, fields)
        self._texts[doc_id] = text
        self._of[doc_id] = fields
        return text

    def prune(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Forget the texts of documents no longer in ``docs`` or changed since, once they
        are as many as the documents (so what is kept stays within twice ``docs``)."""
        if len(self._texts) > 2 * len(docs) + 64:
            kept = [doc_id for doc_id, fields in self._of.items() if docs.get(doc_id) is fields]
            self._texts = {doc_id: self._texts[doc_id] for doc_id in kept}
            self._of = {doc_id: self._of[doc_id] for doc_id in kept}


class SharedDocuments(tuple):
    """``(collection name, {id: fields})``, an item of :data:`Documents`, with ``texts``:
    the :class:`AddedTexts` its subscribers share."""

    texts: AddedTexts

    def __new__(cls, name: str, docs: Mapping[str, Mapping[str, Any]], texts: AddedTexts) -> SharedDocuments:
        self = super().__new__(cls, (name, docs))
        self.texts = texts
        return self


class SubscriptionSink(Protocol):
    """Where a subscription's output goes (the server's connection implements it)."""

    def sub_added(self, sub_id: str, collection: str, doc_id: str, fields: Mapping[str, Any]) -> None: ...
    def sub_changed(self, sub_id: str, collection: str, doc_id: str,
                    fields: Mapping[str, Any] | None, cleared: Iterable[str]) -> None: ...
    def sub_removed(self, sub_id: str, collection: str, doc_id: str) -> None: ...
    def sub_prepared(self, sub_id: str, message: PreparedMessage) -> None: ...
    # Optional: ``sub_prepared_all(sub_id, messages)``, a batch's messages in one call.
    def sub_welcome(self, sub: Subscription, documents: Documents) -> None: ...
    def sub_ready(self, sub_id: str) -> None: ...
    def sub_failed(self, sub_id: str, error: MeteorError) -> None: ...
    def sub_stopped(self, sub_id: str) -> None: ...


class Subscription:
    """One client's subscription to a publication."""

    def __init__(self, sink: SubscriptionSink, sub_id: str, name: str, params: list[Any],
                 connection: ConnectionHandle | None = None, user_id: Any = None) -> None:
        self._sink = sink
        self._send_all = getattr(sink, "sub_prepared_all", None)  # the server's connection has it
        self.id = sub_id
        self.name = name
        self.params = params
        self.connection = connection
        self.user_id = user_id
        self.active = True
        self.started_at = time.time()
        self.observer: Any = None  # set by a Publication: the observer it joined
        self._stop_callbacks: list[Callable[[], None]] = []

    @cached_property
    def shown_params(self) -> str:
        """The params as the node registry (``ddpctl subs ls``) holds them: compact EJSON text
        with secrets redacted (:mod:`ddpctl.redaction`); computed once."""
        shown = redact_params("publication", self.name, to_json_value(self.params))
        return json.dumps(shown, separators=(",", ":"))

    @property
    def refresh_mode(self) -> str:
        """How the observer of this subscription refreshes (``multiplexed`` or ``alone:
        <why>``, see :mod:`ddpctl.livedata.multiplex`); empty without one."""
        return getattr(self.observer, "refresh_mode", "")

    def added(self, collection: str, doc_id: str, fields: Mapping[str, Any]) -> None:
        """Publish a document; ``fields`` values go through ``to_ddp_value`` first, so a
        value with no DDP mapping raises ``TypeError`` here and nothing is published."""
        if self.active:
            self._sink.sub_added(self.id, collection, doc_id, self._fields(collection, doc_id, fields))

    def changed(self, collection: str, doc_id: str, fields: Mapping[str, Any] | None = None,
                cleared: Iterable[str] = ()) -> None:
        """Change a published document (``fields`` converted as in ``added``)."""
        if self.active:
            self._sink.sub_changed(self.id, collection, doc_id,
                                   fields and self._fields(collection, doc_id, fields), cleared)

    def _fields(self, collection: str, doc_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return to_ddp_value(dict(fields), f"publication {self.name!r}, {collection} {doc_id!r} fields")

    def removed(self, collection: str, doc_id: str) -> None:
        """Unpublish a document (Meteor's ``this.removed``); nothing once the subscription ended."""
        if self.active:
            self._sink.sub_removed(self.id, collection, doc_id)

    def send(self, message: PreparedMessage) -> None:
        """``added``/``changed``/``removed`` from a message shared with other subscriptions."""
        if self.active:
            self._sink.sub_prepared(self.id, message)

    def send_all(self, messages: list[PreparedMessage]) -> None:
        """:meth:`send` each of ``messages`` (an observer's batch, in order), in one call to a
        sink that has ``sub_prepared_all`` (the server's connection: one queue item and one
        write for the batch)."""
        if not self.active:
            return
        send_all = self._send_all
        if send_all is not None:
            send_all(self.id, messages)
            return
        for message in messages:
            if not self.active:
                return
            self._sink.sub_prepared(self.id, message)

    def welcome(self, documents: Documents) -> None:
        """``added`` for each of ``documents``, then ``ready``, before anything later ``send``s.

        The sink sends them on its own time (the connection's greenlet, paced by what its
        client reads), not on the caller's: ``documents`` must not change afterwards.
        """
        if self.active:
            self._sink.sub_welcome(self, documents)

    def ready(self) -> None:
        """Tell the client the initial documents are sent (Meteor's ``this.ready``)."""
        if self.active:
            self._sink.sub_ready(self.id)

    def error(self, exc: BaseException) -> None:
        """End the subscription with an error (``nosub`` with the error)."""
        if not self.active:
            return
        if not isinstance(exc, MeteorError):
            logger.error("Error in publication %r", self.name, exc_info=exc)
            exc = internal_server_error()
        self._sink.sub_failed(self.id, exc)
        self.deactivate()

    def stop(self) -> None:
        """End the subscription (``nosub`` without error)."""
        if self.active:
            self._sink.sub_stopped(self.id)
            self.deactivate()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Meteor's ``this.onStop``: call ``callback()`` once when the subscription ends
        (unsub, error, stop or the connection closing); at once if it already has."""
        if self.active:
            self._stop_callbacks.append(callback)
        else:
            callback()

    def deactivate(self) -> None:
        """Run the stop callbacks once (unsub, error, stop or connection close)."""
        if not self.active:
            return
        self.active = False
        callbacks, self._stop_callbacks = self._stop_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("Error in on_stop callback of publication %r", self.name)


Handler = Callable[..., Any]


class PublicationRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._universal: dict[str, bool] = {}  # names, in registration order -> user_only

    def register(self, name: str, handler: Handler, universal: bool = False, user_only: bool = False,
                 sensitive_params: SensitiveParams = None) -> None:
        """``universal``: Meteor's ``Meteor.publish(null, ...)``, started for every connection
        without a ``sub`` message (and re-run at login); clients cannot subscribe to it by name.
        ``user_only``: a universal publication that publishes nothing to a logged-out
        connection: it runs only while the connection has a user (started at login, stopped
        at logout), which no client can tell apart, and an idle logged-out connection holds
        no subscription for it.  ``sensitive_params``: params never stored in the registry,
        printed or logged (``True``, or positions and names: :mod:`ddpctl.redaction`)."""
        existing = self._handlers.get(name)
        if existing is not None and existing is not handler:
            raise ValueError(f"A publication named {name!r} is already registered ({existing!r})")
        declare_sensitive("publication", name, sensitive_params, handler, skip=1)
        self._handlers[name] = handler
        if universal:
            self._universal[name] = user_only
        else:
            self._universal.pop(name, None)

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)
        self._universal.pop(name, None)
        forget_sensitive("publication", name)

    def __contains__(self, name: object) -> bool:
        """True for a publication clients may subscribe to by name."""
        return name in self._handlers and name not in self._universal

    def names(self) -> list[str]:
        return sorted(n for n in self._handlers if n not in self._universal)

    def universal_names(self, logged_in: bool = True) -> list[str]:
        """The universal publications, in registration order (``logged_in=False``: those a
        logged-out connection runs, the ``user_only`` ones left out)."""
        if logged_in:
            return list(self._universal)
        return [name for name, user_only in self._universal.items() if not user_only]

    def user_only(self, name: str) -> bool:
        """Whether ``name`` is a universal publication that runs only for a logged-in user."""
        return self._universal.get(name, False)

    def start(self, sub: Subscription) -> None:
        """Run the publication for ``sub``; errors end it with ``nosub`` and an error."""
        handler = self._handlers.get(sub.name)
        if handler is None:
            sub.error(MeteorError(404, f"Subscription '{sub.name}' not found"))
            return
        try:
            inspect.signature(handler).bind(sub, *sub.params)
        except TypeError as exc:
            sub.error(match_failed(f"subscription to {sub.name!r}: {exc}"))
            return
        try:
            call_user_code(f"publication {sub.name!r}", handler, sub, *sub.params)
        except MeteorError as exc:
            sub.error(exc)


publications = PublicationRegistry()


def publish(name: str | None, *, sensitive_params: SensitiveParams = None) -> Callable[[Handler], Handler]:
    """Register a low-level publication handler under ``name``.

    ``sensitive_params``: ``True``, or the positions (``int``) and names (``str``, handler
    parameters or dict keys) of params that are never stored in the node registry, shown by
    ``ddpctl subs ls`` or logged; keys that look secret always are (:mod:`ddpctl.redaction`).

    ``@publish(None)`` is Meteor's ``Meteor.publish(null, handler)``: a universal
    publication, run for every connection (``handler(sub)``, no params) as soon as it
    connects and again whenever its user changes; it has no ``ready``/``nosub`` and is
    registered under the handler's qualified name, which clients cannot subscribe to.
    """
    def decorate(handler: Handler) -> Handler:
        if name is None:
            publications.register(f"{handler.__module__}.{handler.__qualname__}", handler, universal=True)
        else:
            publications.register(name, handler, sensitive_params=sensitive_params)
        return handler
    return decorate
