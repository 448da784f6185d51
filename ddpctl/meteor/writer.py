"""Writing a bundle in ``meteor build``'s format (star.json, programs, manifests with
Meteor's ``hash``/``sri`` formulas) from client files.

Meteor itself is not needed to serve an app from ddpctl, and cannot be installed
everywhere: this writes format-faithful bundles for tests and for front ends that are
plain JavaScript (the bookstore example).  ``ddpctl serve`` reads them exactly like real ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .bundle import BROWSER_ARCHS
from .hashing import file_hash, sri

__all__ = ["write_bundle"]

_ENCODE_URI_SAFE = ";,/?:@&=+$-_.!~*'()#"  # what JavaScript's encodeURI leaves (Meteor's asset URLs)
MAIN_JS = """
process.argv.splice(2, 0, 'program.json');
process.chdir(require('path').join(__dirname, 'programs', 'server'));
require("./programs/server/runtime.js")({ cachePath: process.env.METEOR_REIFY_CACHE_DIR });
require('./programs/server/boot.js');
"""


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _json(path: Path, value: Any) -> None:
    _write(path, json.dumps(value, indent=2) + "\n")


def _bundled(directory: Path, contents: bytes, kind: str, source_map: bytes | None = None) -> dict[str, Any]:
    """A minified js/css file named after its hash, as the bundler writes it."""
    sri_value = sri(contents)
    digest = file_hash(sri_value)
    name = f"{digest}.{kind}"
    _write(directory / name, contents)
    item = {
        "path": name,
        "where": "client",
        "type": kind,
        "cacheable": True,
        "url": f"/{name}?meteor_{kind}_resource=true",
        "size": len(contents),
        "hash": digest,
        "sri": sri_value,
    }
    if source_map is not None:
        _write(directory / f"{digest}.map", source_map)
        item["sourceMap"] = f"{digest}.map"
        item["sourceMapUrl"] = f"/{digest}.map"
    return item


def _program(
    directory: Path,
    arch: str,
    js: bytes,
    css: bytes | None,
    head: str,
    body: str,
    assets: Mapping[str, bytes],
    source_map: bytes | None,
) -> None:
    manifest = [_bundled(directory, js, "js", source_map)]
    if css is not None:
        manifest.append(_bundled(directory, css, "css"))
    for public_path, contents in sorted(assets.items()):
        path = "app/" + public_path.lstrip("/")
        _write(directory / path, contents)
        manifest.append(
            {
                "path": path,
                "where": "client",
                "type": "asset",
                "cacheable": False,
                "url": quote("/" + public_path.lstrip("/"), safe=_ENCODE_URI_SAFE),
                "size": len(contents),
                "hash": file_hash(None, hashlib.sha1(contents).hexdigest()),
                "sri": None,
            }
        )
    for kind, html in (("head", head), ("body", body)):
        _write(directory / f"{kind}.html", html)
        manifest.append(
            {
                "path": f"{kind}.html",
                "where": "internal",
                "type": kind,
                "hash": hashlib.sha1(html.encode()).hexdigest(),
            }
        )
    _json(directory / "program.json", {"format": "web-program-pre1", "manifest": manifest})


def write_bundle(
    out: str | Path,
    *,
    js: bytes,
    css: bytes | None = None,
    head: str = "",
    body: str = "",
    assets: Mapping[str, bytes] | None = None,
    legacy_js: bytes | None = None,
    source_map: bytes | None = None,
    release: str = "METEOR@3.4.1",
    app_id: str = "ddpctl.bundle",
    git_commit_hash: str | None = None,
    archs: tuple[str, ...] = BROWSER_ARCHS,
) -> Path:
    """Write a bundle to ``out`` (replacing it); its directory.

    ``js``/``css`` are the minified client bundles; ``legacy_js`` the legacy browsers'
    (default: ``js``); ``assets`` maps public paths (``favicon.ico``) to contents.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    programs = []
    for arch in archs:
        _program(
            out / "programs" / arch,
            arch,
            (legacy_js or js) if arch.endswith("legacy") else js,
            css,
            head,
            body,
            assets or {},
            source_map,
        )
        programs.append({"name": arch, "arch": arch, "path": f"programs/{arch}/program.json"})
    programs.append({"name": "server", "arch": "os", "path": "programs/server/boot.js"})
    star: dict[str, Any] = {
        "format": "site-archive-pre1",
        "builtBy": f"Meteor {release}",
        "programs": programs,
        "meteorRelease": release,
        "nodeVersion": "22.22.1",
        "npmVersion": "10.1.0",
    }
    if git_commit_hash:
        star["gitCommitHash"] = git_commit_hash
    _json(out / "star.json", star)
    _write(out / "main.js", MAIN_JS)
    _write(
        out / "README",
        "This is a Meteor application bundle. It has only one external dependency:\n"
        "Node.js. ddpctl serves its client programs.\n",
    )
    _write(out / ".node_version.txt", "v22.22.1\n")
    server = out / "programs" / "server"
    _json(server / "config.json", {"meteorRelease": release, "appId": app_id, "clientArchs": list(archs)})
    _json(
        server / "program.json",
        {
            "format": "javascript-image-pre1",
            "arch": "os",
            "load": [{"path": "app/app.js", "node_modules": "npm/node_modules"}],
        },
    )
    _write(server / "boot.js", "// Meteor's server boot: never served by ddpctl\n")
    _write(server / "app" / "app.js", "// the app's server code: never served by ddpctl\n")
    return out
