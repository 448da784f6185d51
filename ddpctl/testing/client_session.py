"""What a test's DDP client sees, and waiting for it: shared by :class:`~ddpctl.testing.DDPClient`
(a WebSocket to a live server) and :class:`~ddpctl.testing.DDPCommunicator` (in process).

A client records every message it receives: :attr:`ClientSession.messages` (the last
``history`` of them), its copy of the published documents (:attr:`~ClientSession.collections`,
``{collection: {id: fields}}``, fields decoded from EJSON), which subscriptions are ready
or stopped and which methods answered.  The ``wait_for...`` methods read messages until what
they wait for holds -- whether it came just now or while an earlier call read messages -- and
raise :class:`WaitTimeout` (an ``AssertionError``) after ``timeout`` seconds, naming what
was awaited, what holds instead and the last messages received.
"""
from __future__ import annotations

import json
import reprlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..ddp.ejson import from_json_value, to_json_value
from ..ddp.errors import MeteorError

__all__ = ["ClientSession", "WaitTimeout", "eventually", "meteor_error"]

Message = dict[str, Any]
MessageMatch = Callable[[Message], bool] | Mapping[str, Any]
_REPORTED = 10  # messages a timeout report shows
_EXCERPT = 300  # characters of a message or a collection a timeout report shows
_excerpt = reprlib.Repr()
_excerpt.maxstring = _excerpt.maxother = 200


class WaitTimeout(AssertionError):
    """A ``wait_for...`` that timed out; the message says what was awaited, what holds
    instead and which messages came."""


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Call ``check()`` until it returns a true value, and return that value.

    ``WaitTimeout`` after ``timeout`` seconds, with the last value.  For state outside a
    DDP client (a row the server wrote, a file, a log line); a client's own state has the
    ``wait_for...`` methods of :class:`ClientSession`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"not true within {timeout} s: {_excerpt.repr(check)}; last value: {value!r}")
        time.sleep(interval)


def meteor_error(obj: Mapping[str, Any]) -> MeteorError:
    """A ``MeteorError`` rebuilt from its wire object, like Meteor's client does."""
    return MeteorError(obj.get("error"), obj.get("reason"), obj.get("details"))


def _short(value: Any) -> str:
    """``value`` as JSON (keys in their order), cut to :data:`_EXCERPT` characters."""
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return text if len(text) <= _EXCERPT else text[:_EXCERPT - 3] + "..."


def _matcher(match: MessageMatch) -> Callable[[Message], bool]:
    if callable(match):
        return match
    expected = dict(match)
    return lambda msg: all(key in msg and msg[key] == value for key, value in expected.items())


def _describe(match: Any) -> str:
    if callable(match):
        return getattr(match, "__qualname__", None) or _excerpt.repr(match)
    return _short(match) if isinstance(match, Mapping) else _excerpt.repr(match)


class ClientSession:
    """A DDP client's view of its session: subclasses provide :meth:`send` and
    :meth:`_receive_within`; this class records what comes and waits for it.

    ``timeout``: seconds a ``wait_for...`` (and :meth:`call`, :meth:`subscribe`) waits by
    default.  ``history``: how many received messages :attr:`messages` keeps (``None``:
    all of them).
    """

    def __init__(self, *, timeout: float = 10.0, history: int | None = 10_000) -> None:
        self.timeout = timeout
        self.session: str | None = None
        self.collections: dict[str, dict[str, dict[str, Any]]] = {}
        self.ready_subs: set[str] = set()  # subscription ids that got ``ready``
        self.stopped_subs: dict[str, dict[str, Any] | None] = {}  # id -> ``nosub`` error (or None)
        self.results: dict[str, Message] = {}  # method id -> its ``result`` message
        self.updated_methods: set[str] = set()  # method ids named in an ``updated``
        self._history: deque[Message] = deque(maxlen=history)
        self._received = 0  # messages received in all
        self._scanned = 0  # wait_for_message looks from here on (a count of messages received)
        self._next_id = 0

    # -- what subclasses provide ----------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Send a DDP message (a dict, sent as JSON as it is)."""
        raise NotImplementedError

    def _receive_within(self, seconds: float) -> Message | None:
        """The next message (recorded), or ``None`` if none came within ``seconds``."""
        raise NotImplementedError

    # -- recording ----------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """The messages received (the last ``history`` of them), oldest first."""
        return list(self._history)

    def _record(self, msg: Message) -> None:
        self._history.append(msg)
        self._received += 1
        kind = msg.get("msg")
        if kind in ("added", "changed", "removed"):
            docs = self.collections.setdefault(msg["collection"], {})
            if kind == "added":
                docs[msg["id"]] = from_json_value(msg.get("fields", {}))
            elif kind == "changed":
                doc = docs[msg["id"]]
                doc.update(from_json_value(msg.get("fields", {})))
                for name in msg.get("cleared", []):
                    doc.pop(name, None)
            else:
                del docs[msg["id"]]
        elif kind == "ready":
            self.ready_subs.update(msg.get("subs", []))
        elif kind == "nosub":
            self.stopped_subs[msg.get("id")] = msg.get("error")
        elif kind == "result":
            self.results[msg.get("id")] = msg
        elif kind == "updated":
            self.updated_methods.update(msg.get("methods", []))
        elif kind == "connected":
            self.session = msg.get("session")

    def _since(self, count: int) -> Iterator[tuple[int, Message]]:
        """``(number, message)`` of the messages kept that came after the first ``count``."""
        first = self._received - len(self._history)
        for offset, msg in enumerate(self._history):
            if first + offset >= count:
                yield first + offset, msg

    # -- DDP ----------------------------------------------------------------------------

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def connect(self, version: str = "1", support: Sequence[str] = ("1", "pre2", "pre1")) -> str:
        """Send ``connect`` and wait for ``connected``; its session id.  ``AssertionError``
        on ``failed``."""
        self.send({"msg": "connect", "version": version, "support": list(support)})
        start = self._received
        reply = self.wait_for_message(lambda m: m.get("msg") in ("connected", "failed"),
                                      what="connected", since=start)
        if reply.get("msg") != "connected":
            raise AssertionError(f"connect failed: {reply}")
        return reply["session"]

    def sub(self, name: str, *params: Any, sub_id: str | None = None) -> str:
        """Send ``sub`` (params encoded to EJSON); the subscription id.  Does not wait:
        see :meth:`wait_for_ready`."""
        sub_id = sub_id or self.new_id()
        self.send({"msg": "sub", "id": sub_id, "name": name, "params": to_json_value(list(params))})
        return sub_id

    def unsub(self, sub_id: str) -> None:
        """Send ``unsub``.  Does not wait: see :meth:`unsubscribe`."""
        self.stopped_subs.pop(sub_id, None)
        self.send({"msg": "unsub", "id": sub_id})

    def method(self, name: str, *params: Any, random_seed: str | None = None) -> str:
        """Send ``method`` (params encoded to EJSON); the method call's id.  Does not wait:
        see :meth:`wait_for_result`."""
        method_id = self.new_id()
        msg: Message = {"msg": "method", "method": name, "id": method_id,
                        "params": to_json_value(list(params))}
        if random_seed is not None:
            msg["randomSeed"] = random_seed
        self.send(msg)
        return method_id

    def call(self, method: str, *params: Any, random_seed: str | None = None,
             timeout: float | None = None) -> Any:
        """Call a method and wait for its ``result`` and ``updated``; returns the result
        (decoded from EJSON) or raises ``MeteorError``.  Data messages that arrive
        meanwhile update :attr:`collections`."""
        return self.wait_for_result(self.method(method, *params, random_seed=random_seed), timeout=timeout)

    def subscribe(self, name: str, *params: Any, timeout: float | None = None) -> str:
        """Subscribe and wait for ``ready``; the subscription id.  ``MeteorError`` on ``nosub``."""
        sub_id = self.sub(name, *params)
        self.wait_for_ready(sub_id, timeout=timeout)
        return sub_id

    def unsubscribe(self, sub_id: str, timeout: float | None = None) -> None:
        """Send ``unsub`` and wait for its ``nosub`` (the documents' ``removed`` come first)."""
        self.unsub(sub_id)
        self.wait_for(lambda c: sub_id in c.stopped_subs, timeout, what=f"nosub of subscription {sub_id!r}")

    # -- waiting ------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Any], Any], timeout: float | None = None, *,
                 what: str | None = None) -> list[Message]:
        """Read messages until ``predicate(self)`` is true; the messages read meanwhile.

        ``WaitTimeout`` after ``timeout`` seconds (default :attr:`timeout`), saying ``what``
        was awaited and listing the last messages."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        read: list[Message] = []
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(self.report(what or _describe(predicate), timeout, read))
            msg = self._receive_within(left)
            if msg is not None:
                read.append(msg)
        return read

    def wait_for_message(self, match: MessageMatch, timeout: float | None = None, *,
                         since: int | None = None, what: str | None = None) -> Message:
        """The next message that matches: ``match(msg)`` is true, or ``match`` is a dict
        whose items all appear in it (``{"msg": "added", "collection": "books"}``).

        It looks at the messages received after the one the last ``wait_for_message``
        returned (so successive calls walk forward through what came, and a message that
        came while :meth:`call` waited is found), or after the first ``since`` received."""
        test = _matcher(match)
        start = self._scanned if since is None else since
        found: list[Message] = []

        def matched(_: Any) -> bool:
            nonlocal start
            for number, msg in self._since(start):
                start = number + 1
                if test(msg):
                    found.append(msg)
                    return True
            return False

        self.wait_for(matched, timeout, what=what or f"a message matching {_describe(match)}")
        self._scanned = max(self._scanned, start)
        return found[0]

    def wait_for_collection(self, name: str, expected: Callable[[dict[str, dict[str, Any]]], Any]
                            | Mapping[str, Mapping[str, Any]], timeout: float | None = None
                            ) -> dict[str, dict[str, Any]]:
        """Read messages until collection ``name`` (``{id: fields}``, empty if nothing was
        published in it) equals ``expected``, or ``expected(docs)`` is true; a copy of it."""
        if callable(expected):
            def holds(c: ClientSession) -> bool:
                return bool(expected(c.collections.get(name, {})))
            what = f"collection {name!r} to satisfy {_describe(expected)}"
        else:
            def holds(c: ClientSession) -> bool:
                return c.collections.get(name, {}) == expected
            what = f"collection {name!r} to be {_describe(expected)}"
        self.wait_for(holds, timeout, what=what)
        return {doc_id: dict(fields) for doc_id, fields in self.collections.get(name, {}).items()}

    def wait_for_ready(self, sub_id: str, timeout: float | None = None) -> None:
        """Wait for ``ready`` of subscription ``sub_id``; ``MeteorError`` if it got
        ``nosub`` with an error instead (``AssertionError`` if without one)."""
        self.wait_for(lambda c: sub_id in c.ready_subs or sub_id in c.stopped_subs, timeout,
                      what=f"ready of subscription {sub_id!r}")
        if sub_id not in self.ready_subs:
            error = self.stopped_subs[sub_id]
            if error is not None:
                raise meteor_error(error)
            raise AssertionError(f"subscription {sub_id!r} was stopped (nosub) before it was ready")

    def wait_for_result(self, method_id: str, timeout: float | None = None) -> Any:
        """Wait for ``result`` and ``updated`` of method call ``method_id``; its result
        (decoded from EJSON) or the ``MeteorError`` it raised."""
        self.wait_for(lambda c: method_id in c.results and method_id in c.updated_methods, timeout,
                      what=f"result and updated of method call {method_id!r}")
        result = self.results[method_id]
        if "error" in result:
            raise meteor_error(result["error"])
        return from_json_value(result.get("result"))

    def report(self, what: str, timeout: float, read: Sequence[Message] = ()) -> str:
        """The text of a :class:`WaitTimeout`: what was awaited, the collections and the
        last messages received."""
        lines = [f"timed out after {timeout:g} s waiting for {what}",
                 f"  received {len(read)} message(s) while waiting, {self._received} in all"]
        last = list(self._history)[-_REPORTED:]
        if last:
            lines.append(f"  the last {len(last)} received:")
            lines += [f"    {_short(msg)}" for msg in last]
        lines.append("  collections: " + ("".join(f"\n    {name!r}: {len(docs)} document(s) {_short(docs)}"
                                                  for name, docs in self.collections.items()) or "none"))
        return "\n".join(lines)
