"""Reading a ``meteor build --directory`` bundle: ``star.json`` and each client program's
``program.json``, once, into what the server needs.  Only manifest entries with
``where: "client"`` and a URL become servable files, and only inside their program's
directory: server code, ``internal`` files and anything else in the bundle never are.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from .hashing import client_versions

__all__ = ["Bundle", "BundleError", "ClientProgram", "StaticFile", "contained", "find_bundle_dir",
           "load_bundle"]

logger = logging.getLogger(__name__)
BROWSER_ARCHS = ("web.browser", "web.browser.legacy")


class BundleError(ValueError):
    """The directory is not a usable ``meteor build`` bundle (the message says why)."""


@dataclass(frozen=True)
class StaticFile:
    url_path: str
    path: Path
    type: str
    cacheable: bool
    hash: str
    sri: str | None
    size: int
    source_map: Path | None = None
    source_map_url: str | None = None


@dataclass
class ClientProgram:
    arch: str
    directory: Path
    manifest: list[dict[str, Any]]
    head: str
    body: str
    css: list[dict[str, Any]]
    js: list[dict[str, Any]]
    files: dict[str, StaticFile]
    source_maps: dict[str, Path]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files.values())


@dataclass
class Bundle:
    directory: Path
    star: dict[str, Any]
    meteor_release: str
    app_id: str
    git_commit_hash: str | None
    public_settings: dict[str, Any]
    programs: dict[str, ClientProgram]
    skipped_archs: list[str]

    def program_for(self, arch: str) -> ClientProgram:
        """``arch``'s program, or the other browser program when the bundle lacks it."""
        if arch in self.programs:
            return self.programs[arch]
        for fallback in BROWSER_ARCHS:
            if fallback in self.programs:
                return self.programs[fallback]
        return next(iter(self.programs.values()))


def find_bundle_dir(path: str | Path) -> Path:
    """``path`` itself if it holds ``star.json``, or its ``bundle/`` (what
    ``meteor build --directory OUT`` writes)."""
    directory = Path(path).expanduser().resolve()
    if (directory / "star.json").is_file():
        return directory
    if (directory / "bundle" / "star.json").is_file():
        return directory / "bundle"
    if not directory.exists():
        raise BundleError(f"{directory}: no such directory")
    raise BundleError(f"{directory}: no star.json (is it the output of `meteor build --directory`?)")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing ({what})") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read {what}: {exc}") from None


def _inside(directory: Path, relative: str, where: str) -> Path:
    """``directory/relative``, refusing absolute paths and ``..`` (a hostile manifest)."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not relative:
        raise BundleError(f"{where}: path {relative!r} leaves the program directory")
    return directory.joinpath(*pure.parts)


def contained(directory: Path | str, path: Path | str) -> bool:
    """Is ``path``'s real location (symlinks resolved) inside ``directory``'s?"""
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _url_path(url: str) -> str:
    return unquote(urlsplit(url).path)


def load_program(directory: Path, arch: str, control: Path, public_settings: dict[str, Any],
                 autoupdate_version: str | None = None) -> ClientProgram:
    program = _read_json(control, f"the {arch} program")
    if not isinstance(program, dict) or program.get("format") != "web-program-pre1":
        raise BundleError(f"{control}: not a web-program-pre1 program.json")
    manifest = program.get("manifest")
    if not isinstance(manifest, list):
        raise BundleError(f"{control}: no manifest")
    head = body = ""
    css, js = [], []
    files: dict[str, StaticFile] = {}
    source_maps: dict[str, Path] = {}
    for index, item in enumerate(manifest):
        where = f"{control} manifest[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or "type" not in item:
            raise BundleError(f"{where}: an entry needs a path and a type")
        if not isinstance(item.get("hash", ""), str):
            raise BundleError(f"{where}: hash must be a string")
        path = _inside(directory, item["path"], where)
        kind = item["type"]
        if item.get("where") == "internal":
            if kind in ("head", "body"):
                if not contained(directory, path):
                    raise BundleError(f"{where}: {item['path']} is a link out of the program directory")
                try:
                    text = path.read_text("utf-8")
                except OSError as exc:
                    raise BundleError(f"{where}: cannot read {item['path']}: {exc}") from None
                if kind == "head":
                    head = text
                else:
                    body = text
            continue
        if item.get("where") != "client" or not item.get("url"):
            continue
        if not path.is_file():
            raise BundleError(f"{where}: {item['path']} is listed but missing")
        if not contained(directory, path):
            logger.warning("%s: %s is a link out of the program directory (to %s): not served",
                           where, item["path"], os.path.realpath(path))
            continue
        if kind == "css":
            css.append(item)
        elif kind == "js" and not item["path"].startswith("dynamic/"):
            js.append(item)
        source_map = source_map_url = None
        if item.get("sourceMap") and item.get("sourceMapUrl"):
            source_map = _inside(directory, item["sourceMap"], where)
            source_map_url = item["sourceMapUrl"]
            if contained(directory, source_map):
                source_maps[_url_path(source_map_url)] = source_map
            else:
                logger.warning("%s: source map %s is a link out of the program directory: not served",
                               where, item["sourceMap"])
        url_path = _url_path(item["url"])
        files[url_path] = StaticFile(url_path, path, kind, bool(item.get("cacheable")), item.get("hash", ""),
                                     item.get("sri"), path.stat().st_size, source_map, source_map_url)
    return ClientProgram(arch, directory, manifest, head, body, css, js, files, source_maps,
                         client_versions(manifest, public_settings, autoupdate_version))


def load_bundle(path: str | Path, public_settings: dict[str, Any] | None = None,
                autoupdate_version: str | None = None) -> Bundle:
    """Read and check the bundle at ``path``; ``BundleError`` naming the first problem."""
    directory = find_bundle_dir(path)
    star = _read_json(directory / "star.json", "the bundle manifest")
    if not isinstance(star, dict) or star.get("format") != "site-archive-pre1":
        found = star.get("format") if isinstance(star, dict) else None
        raise BundleError(f"{directory / 'star.json'}: format is {found!r}, expected 'site-archive-pre1'")
    settings = public_settings or {}
    config: dict[str, Any] = {}
    programs: dict[str, ClientProgram] = {}
    skipped = []
    for entry in star.get("programs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise BundleError(f"{directory / 'star.json'}: a program entry needs a path")
        arch = entry.get("arch", "")
        control = _inside(directory, entry["path"], "star.json")
        if arch == "os" or entry.get("name") == "server":
            config_file = control.parent / "config.json"
            if config_file.is_file():
                config = _read_json(config_file, "the server config")
            continue
        if arch not in BROWSER_ARCHS:
            skipped.append(arch)  # web.cordova: Cordova apps load their files from the device
            continue
        programs[arch] = load_program(control.parent, arch, control, settings, autoupdate_version)
    if not programs:
        raise BundleError(f"{directory}: star.json lists no web.browser or web.browser.legacy program")
    release = config.get("meteorRelease") or star.get("meteorRelease") or "none"
    return Bundle(directory, star, release, config.get("appId") or "", star.get("gitCommitHash"), settings,
                  programs, skipped)
