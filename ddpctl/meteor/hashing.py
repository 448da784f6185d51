"""Meteor's hashes: a file's ``sri`` and ``hash`` (tools/isobuild ``File``) and the client
versions of packages/webapp-hashing that drive hot code push."""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["VERSION_FILTERS", "client_hash", "client_versions", "file_hash", "js_json", "sri"]


def sri(data: bytes) -> str:
    """``base64(sha512(contents))``, the ``sri`` of a manifest entry."""
    return base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def file_hash(sri_value: str | None = None, input_hash: str = "") -> str:
    """A manifest ``hash``: ``sha1_hex("2" + inputHash + sri)``."""
    return hashlib.sha1(("2" + input_hash + (sri_value or "")).encode()).hexdigest()


def js_json(value: Any) -> str:
    """``JSON.stringify(value)``: no spaces, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


Filter = Callable[[str, bool], bool]
VERSION_FILTERS: dict[str, Filter | None] = {
    "version": None,
    "versionRefreshable": lambda kind, replaceable: kind == "css",
    "versionNonRefreshable": lambda kind, replaceable: kind != "css" and not replaceable,
    "versionReplaceable": lambda kind, replaceable: replaceable,
}


def client_hash(manifest: Iterable[Mapping[str, Any]], include: Filter | None,
                public_settings: Mapping[str, Any]) -> str:
    """``WebAppHashing.calculateClientHash(manifest, include, {PUBLIC_SETTINGS})``."""
    digest = hashlib.sha1(js_json({"PUBLIC_SETTINGS": public_settings}).encode())
    for item in manifest:
        if item.get("where") not in ("client", "internal"):
            continue
        if include is not None and not include(item.get("type", ""), bool(item.get("replaceable"))):
            continue
        digest.update(item["path"].encode())
        digest.update(item["hash"].encode())
    return digest.hexdigest()


def client_versions(manifest: list[Mapping[str, Any]], public_settings: Mapping[str, Any],
                    override: str | None = None) -> dict[str, str]:
    """The four versions of a client program (``$AUTOUPDATE_VERSION`` -> ``override``)."""
    if override:
        return dict.fromkeys(VERSION_FILTERS, override)
    return {name: client_hash(manifest, include, public_settings)
            for name, include in VERSION_FILTERS.items()}
