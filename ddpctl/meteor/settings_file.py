"""A Meteor settings file (``meteor --settings settings.json``): only its ``public`` part
reaches clients, as ``PUBLIC_SETTINGS`` and ``Meteor.settings.public``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .bundle import BundleError

__all__ = ["public_settings"]


def public_settings(path: str | Path | None) -> dict[str, Any]:
    """The ``public`` object of the settings file at ``path`` (``{}`` without one)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the Meteor settings file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"the Meteor settings file {path} must hold a JSON object")
    public = data.get("public", {})
    if not isinstance(public, dict):
        raise BundleError(f"'public' in the Meteor settings file {path} must be an object")
    return public
