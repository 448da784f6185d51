"""``ddpctl meteor build`` and ``ddpctl meteor inspect``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .output import Column, emit_table, stderr_console


@click.group()
def meteor() -> None:
    """Build a Meteor app and inspect the bundle `ddpctl serve --meteor-bundle` serves."""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _summary(bundle: Any) -> dict[str, Any]:
    return {
        "directory": str(bundle.directory),
        "meteorRelease": bundle.meteor_release,
        "appId": bundle.app_id,
        "gitCommitHash": bundle.git_commit_hash,
        "skippedArchs": bundle.skipped_archs,
        "programs": {
            arch: {
                "files": len(p.files),
                "bytes": p.total_size,
                "js": [i["url"] for i in p.js],
                "css": [i["url"] for i in p.css],
                "versions": p.versions,
                "sourceMaps": sorted(p.source_maps),
            }
            for arch, p in bundle.programs.items()
        },
    }


def _print_summary(bundle: Any) -> None:
    rows = [
        {
            "arch": arch,
            "files": len(p.files),
            "size": _size(p.total_size),
            "js": _size(sum(p.files[u].size for u in p.files if p.files[u].type == "js")),
            "css": _size(sum(p.files[u].size for u in p.files if p.files[u].type == "css")),
            "version": p.versions["version"][:12],
        }
        for arch, p in bundle.programs.items()
    ]
    emit_table(
        [
            Column("arch", "arch", style="bold"),
            Column("files", "files", justify="right"),
            Column("size", "size", justify="right"),
            Column("js", "js", justify="right"),
            Column("css", "css", justify="right"),
            Column("version", "version"),
        ],
        rows,
        False,
    )
    click.echo(
        f"{bundle.directory}: {bundle.meteor_release}, appId {bundle.app_id or '-'}"
        + (f"; not served: {', '.join(bundle.skipped_archs)}" if bundle.skipped_archs else "")
    )


@meteor.command("build")
@click.argument("app_dir", metavar="APPDIR", type=click.Path(exists=True, file_okay=False, resolve_path=True))
@click.option(
    "-o",
    "--output",
    metavar="OUT",
    type=click.Path(file_okay=False, resolve_path=True),
    default=None,
    help="Where to write the build (the bundle goes in OUT/bundle).  Default: APPDIR/../<app>-build.",
)
@click.option(
    "--meteor",
    "meteor_path",
    metavar="PATH",
    envvar="DDPCTL_METEOR",
    help="The meteor executable: a path (relative to the current directory) or a command name "
    "looked up on PATH (default: meteor).  [env: DDPCTL_METEOR]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.argument("meteor_args", nargs=-1, metavar="[-- METEOR_ARGS]")
def meteor_build(
    app_dir: str, output: str | None, meteor_path: str | None, as_json: bool, meteor_args: tuple[str, ...]
) -> None:
    """Run `meteor build --directory` on APPDIR and check the result.

    Shows meteor's progress, then validates the bundle exactly as `ddpctl serve` reads
    it and prints a summary: client archs, file counts and sizes, versions.  Exits
    non-zero with meteor's last lines when meteor is missing or the build fails.

    \b
    Examples:
      ddpctl meteor build ./myapp -o ./build
      ddpctl serve --settings mysite.settings --meteor-bundle ./build
      ddpctl meteor build ./myapp -o ./build -- --server-only   # arguments for meteor
    """
    from ..meteor.build import BuildError, build, find_meteor

    app = Path(app_dir).resolve()
    out = Path(output) if output else app.parent / f"{app.name}-build"
    try:
        executable = find_meteor(meteor_path)
        console = stderr_console()
        if sys.stderr.isatty() and not as_json:
            with console.status(f"meteor build {app.name}") as status:
                bundle = build(
                    app,
                    out,
                    executable,
                    meteor_args,
                    on_line=lambda line: status.update(f"meteor build: {line.strip()[:80]}"),
                )
        else:
            bundle = build(app, out, executable, meteor_args, on_line=lambda line: click.echo(line, err=True))
    except BuildError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(_summary(bundle), indent=2))
    else:
        _print_summary(bundle)
        click.echo(f"serve it with: ddpctl serve --meteor-bundle {out}")


@meteor.command("inspect")
@click.argument("bundle_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, resolve_path=True))
@click.option(
    "--meteor-settings",
    metavar="FILE",
    type=click.Path(resolve_path=True),
    help="Meteor settings JSON (its public part changes the versions).",
)
@click.option("--files", "list_files", is_flag=True, help="List every file served, with its URL and headers.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def meteor_inspect(bundle_dir: str, meteor_settings: str | None, list_files: bool, as_json: bool) -> None:
    """Show what `ddpctl serve --meteor-bundle DIR` would serve.

    Checks the bundle like serve does (exit 1 with the reason if it cannot be served),
    then lists per client arch its files, sizes, script and stylesheet URLs, and the
    autoupdate versions clients will see.  Server code and internal files are never
    served; --files lists exactly what is.

    \b
    Examples:
      ddpctl meteor inspect ./build
      ddpctl meteor inspect ./build --files
      ddpctl meteor inspect ./build/bundle --json | jq '.programs["web.browser"].versions'
    """
    from ..meteor.bundle import BundleError, load_bundle
    from ..meteor.settings_file import public_settings

    try:
        bundle = load_bundle(bundle_dir, public_settings(meteor_settings))
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    summary = _summary(bundle)
    files = [
        {
            "arch": arch,
            "url": f.url_path,
            "type": f.type,
            "bytes": f.size,
            "cacheable": f.cacheable,
            "etag": f.hash,
            "integrity": bool(f.sri),
        }
        for arch, p in bundle.programs.items()
        for f in p.files.values()
    ]
    if as_json:
        click.echo(json.dumps({**summary, "files": files}, indent=2))
        return
    _print_summary(bundle)
    for arch, program in bundle.programs.items():
        click.echo(
            f"{arch}: scripts {', '.join(i['url'] for i in program.js) or '-'}; "
            f"stylesheets {', '.join(i['url'] for i in program.css) or '-'}"
        )
    if list_files:
        emit_table(
            [
                Column("arch", "arch"),
                Column("url", "url", style="cyan"),
                Column("type", "type"),
                Column("bytes", "bytes", justify="right"),
                Column("cacheable", "cache", lambda v: "1 year, immutable" if v else "revalidate"),
            ],
            files,
            False,
        )
