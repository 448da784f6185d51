"""Secrets in subscription and method params: kept out of the registry, ``ddpctl subs ls`` and logs.

Params can hold anything a client sends: a token, a password, an API key.  Before params
are stored in the node registry, printed, or written to a log, ddpctl replaces secret
values with :data:`REDACTED` (the client and your code still get the real values):

* by default, the value of every dict key that looks secret, at any depth (in nested
  dicts and lists): ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``,
  ``credential(s)``, ``api_key``, ``private_key``, ``authorization``, ``session_id``,
  ``cookie``, ``signature``, ``bearer`` anywhere in the key and, as whole words of a
  ``snake_case``, ``kebab-case`` or ``camelCase`` key, ``key``, ``auth``, ``pass``, ``pwd``,
  ``pin``, ``otp``, ``jwt``, ``cvv``, ``cvc``, ``ssn`` (case-insensitive: ``accessToken``,
  ``X-Api-Key``, ``newPassword``, ``sortKey``, ``user_pin`` are redacted; ``author``,
  ``keyword``, ``monkey``, ``userpin`` are not).  A positional
  param whose handler parameter has such a name (``def login(username, password)``) too;
* every param, or some, of a method or publication that declares them sensitive::

      class Checkout(Publication):
          sensitive_params = True              # every param

      class ResetLink(Publication):
          sensitive_params = ["code", 2]       # the param named code, the third param,
          def get_queries(self, email, code, pin): ...  # and any dict key "code"

      @publish("stream", sensitive_params=[0])
      @method("users.enroll", sensitive_params=["enrollment"])

  An ``int`` is a position in ``params`` (from 0); a ``str`` is the name of a handler
  parameter and also a dict key redacted at any depth (exact name, case-insensitive).
* the ``DDPCTL_SECRET_PARAM_KEYS`` Django setting adds patterns (regular expressions,
  searched case-insensitively in each dict key and parameter name)::

      DDPCTL_SECRET_PARAM_KEYS = [r"^iban$", r"recovery"]

``Match failed`` replies never carry Python's detail either (:func:`ddpctl.ddp.errors.match_failed`).
This module is pure (no Django import); :meth:`DdpctlConfig.ready` reads the setting.
"""
from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "REDACTED", "SensitiveParams", "compile_patterns", "configure", "declare_sensitive", "forget_sensitive",
    "is_secret_key", "redact", "redact_message", "redact_params", "redact_params_json", "redact_text",
]

REDACTED = "[redacted]"

SensitiveParams = bool | Iterable[int | str] | None
"""``True`` (every param), positions (``int``) and names (``str``), or ``False``/``None``."""

Kind = Literal["method", "publication"]

_DEFAULT_PATTERN = (
    r"passw(?:or)?d|passphrase|secret|token|credential|api_?key|private_?key|authoriz|session_?(?:id|key)"
    r"|cookie|signature|bearer|(?<![a-z])(?:key|auth|pass|pwd|pin|otp|jwt|cvv|cvc|ssn)(?![a-z])")
_DEFAULT = re.compile(_DEFAULT_PATTERN)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_extra: re.Pattern[str] | None = None


def compile_patterns(patterns: object) -> re.Pattern[str] | None:
    """The ``DDPCTL_SECRET_PARAM_KEYS`` setting (a regular expression or a list/tuple of them)
    as one case-insensitive pattern (``None`` for none); ``ValueError`` naming what is wrong."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)):
        raise ValueError(f"DDPCTL_SECRET_PARAM_KEYS must be a list of regular expressions, not "
                         f"{type(patterns).__name__}")
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"DDPCTL_SECRET_PARAM_KEYS: {pattern!r} is not a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"DDPCTL_SECRET_PARAM_KEYS: {pattern!r} is not a valid regular expression: "
                             f"{exc}") from None
        compiled.append(f"(?:{pattern})")
    return re.compile("|".join(compiled), re.IGNORECASE) if compiled else None


def configure(patterns: object) -> None:
    """Add ``patterns`` (the ``DDPCTL_SECRET_PARAM_KEYS`` setting) to the default ones;
    ``ValueError`` as :func:`compile_patterns`."""
    global _extra
    _extra = compile_patterns(patterns)


def is_secret_key(key: object) -> bool:
    """Whether the value of dict key (or parameter name) ``key`` is redacted by default."""
    if not isinstance(key, str):
        return False
    if _DEFAULT.search(_CAMEL.sub("_", key).lower()):
        return True
    return _extra is not None and _extra.search(key) is not None


def redact(value: Any, names: frozenset[str] = frozenset()) -> Any:
    """A copy of ``value`` in which the value of every secret-looking key (or one of ``names``,
    lower case), in dicts at any depth, is :data:`REDACTED`; ``value`` itself is left as is."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) or (isinstance(k, str) and k.lower() in names)
                else redact(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, names) for v in value]
    return value


@dataclass(frozen=True)
class _Declaration:
    everything: bool
    positions: frozenset[int]
    names: frozenset[str]  # lower case
    parameters: tuple[str, ...]  # the handler's positional parameter names, in order


_declared: dict[tuple[Kind, str], _Declaration] = {}


def declare_sensitive(kind: Kind, name: str, sensitive: SensitiveParams = None,
                      handler: Callable[..., Any] | None = None, skip: int = 0) -> None:
    """Record which params of method or publication ``name`` are secret (see the module).

    ``handler``: the function the params are bound to, after ``skip`` leading parameters
    (the subscription or ``self``); its parameter names are matched like keys.  ``TypeError``
    for a ``sensitive`` that is neither a bool nor an iterable of ints and strings.
    """
    everything = sensitive is True
    positions: set[int] = set()
    names: set[str] = set()
    if sensitive not in (None, False, True):
        if isinstance(sensitive, str | bytes | Mapping) or not isinstance(sensitive, Iterable):
            raise TypeError(f"sensitive_params of {kind} {name!r} must be True or a list of positions "
                            f"and names, not {sensitive!r}")
        for item in sensitive:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise TypeError(f"sensitive_params of {kind} {name!r}: {item!r} is neither a position (int) "
                                "nor a name (str)")
            if isinstance(item, int):
                if item < 0:
                    raise TypeError(f"sensitive_params of {kind} {name!r}: position {item} is negative")
                positions.add(item)
            else:
                names.add(item.lower())
    parameters: tuple[str, ...] = ()
    if handler is not None:
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            parameters = tuple(p.name for p in signature.parameters.values() if p.kind in kinds)[skip:]
    _declared[(kind, name)] = _Declaration(everything, frozenset(positions), frozenset(names), parameters)


def forget_sensitive(kind: Kind, name: str) -> None:
    _declared.pop((kind, name), None)


def redact_params(kind: Kind, name: str, params: Any) -> Any:
    """``params`` of a call of method (or subscription to publication) ``name``, redacted: as
    declared with :func:`declare_sensitive`, and by key.  A non-list is redacted by key."""
    declaration = _declared.get((kind, name))
    if not isinstance(params, list | tuple):
        return redact(params, declaration.names if declaration else frozenset())
    if declaration is None:
        return [redact(p) for p in params]
    if declaration.everything:
        return [REDACTED] * len(params)
    out = []
    for position, param in enumerate(params):
        parameter = declaration.parameters[position] if position < len(declaration.parameters) else None
        if position in declaration.positions or (parameter is not None and (
                parameter.lower() in declaration.names or is_secret_key(parameter))):
            out.append(REDACTED)
        else:
            out.append(redact(param, declaration.names))
    return out


def redact_params_json(kind: Kind, name: str, text: str) -> str:
    """:func:`redact_params` of params held as JSON text (the registry's ``params``); text that
    is not JSON is replaced whole."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return json.dumps(REDACTED)
    return json.dumps(redact_params(kind, name, params), separators=(",", ":"), ensure_ascii=False)


_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')
_JSON_SCALAR = re.compile(r'[^,}\]\s]*')


def _value_end(text: str, start: int) -> int:
    """Where the JSON value at ``start`` ends (the end of ``text`` if it is cut short)."""
    if text.startswith('"', start):
        return _JSON_STRING.match(text, start).end()
    if not text.startswith(("{", "["), start):
        return _JSON_SCALAR.match(text, start).end()
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _JSON_STRING.match(text, i).end()
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def redact_text(text: str) -> str:
    """Text that should be a DDP message but does not parse (a log shows an excerpt): the
    value of every ``"key": value`` member whose key looks secret replaced, as far as the
    text goes (a value cut short, an object or an array too)."""
    out, i = [], 0
    while (match := _JSON_KEY.search(text, i)) is not None:
        if not is_secret_key(match.group(1)):
            i_next = match.end()
            if text.startswith('"', i_next):  # a string value: not read for keys
                i_next = _JSON_STRING.match(text, i_next).end()
            out.append(text[i:i_next])
            i = i_next
            continue
        out.append(text[i:match.end()] + f'"{REDACTED}"')
        i = _value_end(text, match.end())
    out.append(text[i:])
    return "".join(out)


def redact_message(msg: Any) -> Any:
    """A DDP message as a log may show it: the ``params`` of a ``method`` or ``sub`` redacted
    (by the method's or publication's declaration when its name is a string)."""
    if not isinstance(msg, Mapping) or "params" not in msg:
        return msg
    kind: Kind = "method" if msg.get("msg") == "method" else "publication"
    name = msg.get("method") if kind == "method" else msg.get("name")
    if not isinstance(name, str):
        name = ""
    return {**msg, "params": redact_params(kind, name, msg["params"])}
