"""Django settings as the defaults of a command's options.

An option whose environment variable is ``DDPCTL_<NAME>`` (its first ``DDPCTL_`` one) can
also be set by the Django setting ``DDPCTL_<NAME>``.  Precedence, the same for every such option::

    the option on the command line  >  its environment variable(s)  >  the Django setting  >  the default

The settings module is imported after Click has parsed the command line, so the setting is
applied then, to the options whose value came from their default
(``click.Context.get_parameter_source``), and converted by the option's own Click type and
callback: a setting is checked exactly like the option, plus its Python type (``"10"`` is not
an integer setting).  Options needed to find the settings (``--settings``, ``--pythonpath``)
or read before them (``--reload``) have no setting.

:func:`setting_problems` is the system check's view of the same rules (``ddpctl.E002``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import click
from click.core import ParameterSource

__all__ = ["UNSETTABLE", "apply_settings", "setting_name", "setting_problems", "settable_options"]

UNSETTABLE = frozenset({"settings", "pythonpath", "reload"})  # needed before the settings exist


def setting_name(param: click.Parameter) -> str | None:
    """The Django setting of an option: its first ``DDPCTL_*`` environment variable, or ``None``."""
    if not isinstance(param, click.Option) or param.name in UNSETTABLE or param.hidden:
        return None
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    return next((name for name in names if name.startswith("DDPCTL_")), None)


def settable_options(command: click.Command) -> dict[str, click.Option]:
    """``{setting name: option}`` for every option of ``command`` that has a setting."""
    out: dict[str, click.Option] = {}
    for param in command.params:
        name = setting_name(param)
        if name is not None:
            out[name] = param  # type: ignore[assignment]
    return out


def _describe(param_type: click.ParamType) -> str:
    if isinstance(param_type, click.IntRange):
        low = param_type.min
        return "a positive integer" if low == 1 else "an integer" if low is None else f"an integer >= {low}"
    if isinstance(param_type, click.types.IntParamType):
        return "an integer"
    if isinstance(param_type, click.types.FloatParamType):
        return "a number of seconds" if param_type.name == "seconds" else "a number"
    if isinstance(param_type, click.types.BoolParamType):
        return "True or False"
    if isinstance(param_type, click.Choice):
        return "one of " + ", ".join(repr(c) for c in param_type.choices)
    if isinstance(param_type, click.Path):
        return "a path"
    if param_type.name == "bytes":
        return "a byte count (an int, or a string such as '64M')"
    return "a string"


def _right_type(param_type: click.ParamType, value: Any) -> bool:
    """Whether ``value`` has the Python type a setting of ``param_type`` must have."""
    if isinstance(param_type, click.types.BoolParamType):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(param_type, click.types.IntParamType):
        return isinstance(value, int)
    if isinstance(param_type, click.types.FloatParamType):
        return isinstance(value, int | float)
    if isinstance(param_type, click.Path):
        return isinstance(value, str | os.PathLike)
    if param_type.name == "bytes":
        return isinstance(value, int | str)
    return isinstance(value, str)


def convert_setting(ctx: click.Context, option: click.Option, name: str, value: Any) -> Any:
    """The option's value for the setting ``name = value``; ``ValueError`` with a one-line
    message naming the setting and what it must be."""
    what = _describe(option.type)
    if option.multiple or option.nargs != 1:
        what = (f"a list of {option.metavar} strings" if option.metavar and what == "a string"
                else f"a list of {what.removeprefix('a ').removeprefix('an ')}s")
        items = value if isinstance(value, list | tuple) else None
        if items is None or not all(_right_type(option.type, item) for item in items):
            raise ValueError(f"{name} must be {what}, not {value!r}.")
        value = [os.fspath(item) if isinstance(item, os.PathLike) else item for item in items]
    elif not _right_type(option.type, value):
        raise ValueError(f"{name} must be {what}, not {value!r}.")
    elif isinstance(value, os.PathLike):
        value = os.fspath(value)
    try:
        converted = option.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        if isinstance(option.type, click.Choice | click.IntRange):  # its message says no more
            raise ValueError(f"{name} must be {what}, not {value!r}.") from None
        raise ValueError(f"{name} must be {what}, not {value!r} ({exc.message.rstrip('.')}).") from None
    if option.callback is None:
        return converted
    try:
        return option.callback(ctx, option, converted)
    except click.BadParameter as exc:
        raise ValueError(f"{name} must be {what}, not {value!r} ({exc.message.rstrip('.')}).") from None


def apply_settings(ctx: click.Context, values: dict[str, Any], settings: Any,
                   other_sources: Mapping[str, Iterable[str]] = {}) -> list[str]:
    """Replace in ``values`` (the command's keyword arguments) each option left at its default
    whose Django setting is set in ``settings``; the names of the settings applied.

    ``other_sources`` maps an option's name to environment variables that set it other than
    its Click ones (Meteor's ``SERVER_WEBSOCKET_COMPRESSION``): when one is set, the setting
    does not apply.  Raises ``click.ClickException`` for an invalid setting.
    """
    applied = []
    for name, option in settable_options(ctx.command).items():
        if option.name not in values or not hasattr(settings, name):
            continue
        if ctx.get_parameter_source(option.name) not in (ParameterSource.DEFAULT, None):
            continue
        if any(os.environ.get(var) is not None for var in other_sources.get(option.name, ())):
            continue
        try:
            values[option.name] = convert_setting(ctx, option, name, getattr(settings, name))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        applied.append(name)
    return applied


def setting_problems(command: click.Command, settings: Any, skip: Iterable[str] = ()) -> list[str]:
    """One message per setting of ``command``'s options that ``settings`` sets to an invalid
    value (the ones in ``skip`` have checks of their own)."""
    problems = []
    with click.Context(command, info_name=command.name) as ctx:
        for name, option in settable_options(command).items():
            if name in skip or not hasattr(settings, name):
                continue
            try:
                convert_setting(ctx, option, name, getattr(settings, name))
            except ValueError as exc:
                problems.append(str(exc))
    return problems
