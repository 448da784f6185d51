"""``__meteor_runtime_config__`` and the app's HTML, as Meteor's boilerplate-generator
(template-web.browser.js) writes them, line for line."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from .bundle import Bundle, ClientProgram
from .hashing import js_json

__all__ = ["autoupdate_versions", "encode_config", "render_html", "runtime_config"]

AUTOUPDATE_FIELDS = ("version", "versionRefreshable", "versionNonRefreshable", "versionReplaceable")


def autoupdate_versions(bundle: Bundle) -> dict[str, dict[str, str]]:
    return {arch: {k: program.versions[k] for k in AUTOUPDATE_FIELDS}
            for arch, program in bundle.programs.items()}


def runtime_config(bundle: Bundle, program: ClientProgram, root_url: str, ddp_url: str | None = None,
                   path_prefix: str = "") -> dict[str, Any]:
    """What ``__meteor_runtime_config__`` holds for a page of ``program``."""
    config: dict[str, Any] = {"meteorRelease": bundle.meteor_release}
    if bundle.git_commit_hash:
        config["gitCommitHash"] = bundle.git_commit_hash
    config.update({
        "meteorEnv": {"NODE_ENV": "production", "TEST_METADATA": "{}"},
        "PUBLIC_SETTINGS": bundle.public_settings,
        "debug": False,
        "ROOT_URL": root_url,
        "ROOT_URL_PATH_PREFIX": path_prefix,
    })
    if ddp_url:
        config["DDP_DEFAULT_CONNECTION_URL"] = ddp_url
    config["autoupdate"] = {
        "versions": autoupdate_versions(bundle),
        "autoupdateVersion": None,
        "autoupdateVersionRefreshable": None,
        "autoupdateVersionCordova": None,
        "appId": bundle.app_id,
    }
    config["appId"] = bundle.app_id
    config["isModern"] = program.arch == "web.browser"
    return config


def encode_config(config: Mapping[str, Any]) -> str:
    """``JSON.stringify(encodeURIComponent(JSON.stringify(config)))``."""
    return '"' + quote(js_json(config), safe="-_.!~*'()") + '"'


def _sri(item: Mapping[str, Any], mode: str | None) -> str:
    if item.get("sri") and mode:
        return f' integrity="sha512-{item["sri"]}" crossorigin="{escape(mode)}"'
    return ""


def render_html(program: ClientProgram, config: Mapping[str, Any], *, path_prefix: str = "",
                sri_mode: str | None = None, inline_scripts: bool = True) -> str:
    """The boilerplate page of ``program``."""
    css = "\n".join(
        f'  <link rel="stylesheet" type="text/css" class="__meteor-css__" '
        f'href="{escape(path_prefix + item["url"])}"{_sri(item, sri_mode)}>' for item in program.css)
    head_parts = program.head.split("<meteor-bundled-css", 1)
    if len(head_parts) == 1:
        head = css + "\n" + head_parts[0]
    else:
        rest = head_parts[1].split(">", 1)[1] if ">" in head_parts[1] else ""
        head = head_parts[0] + "\n" + css + "\n" + rest
    encoded = encode_config(config)
    if inline_scripts:
        config_script = ('  <script type="text/javascript">__meteor_runtime_config__ = '
                         f"JSON.parse(decodeURIComponent({encoded}))</script>")
    else:
        digest = hashlib.sha1(encoded.encode()).hexdigest()
        config_script = (f'  <script type="text/javascript" src="{escape(path_prefix)}'
                         f'/meteor_runtime_config.js?hash={digest}"></script>')
    scripts = [f'  <script type="text/javascript" src="{escape(path_prefix + item["url"])}"'
               f"{_sri(item, sri_mode)}></script>" for item in program.js]
    return "\n".join([
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        head,
        "",
        "</head>",
        "<body>" + program.body,
        config_script,
        "",
        *scripts,
        "",
        "",
        "</body>",
        "</html>",
    ])
