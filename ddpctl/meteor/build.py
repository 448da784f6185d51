"""``meteor build --directory`` run for the user, with its output streamed and the
result checked like ``ddpctl serve`` will read it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from .bundle import Bundle, BundleError, load_bundle

__all__ = ["BuildError", "build", "find_meteor"]


class BuildError(RuntimeError):
    """The build could not run or failed (the message says why)."""


def find_meteor(explicit: str | None = None) -> str:
    """The ``meteor`` executable, as an absolute path (the build runs in the app's directory):
    ``explicit``, a path (relative to the current directory) or a bare command name looked
    up on PATH; else ``meteor`` on PATH.  ``BuildError`` if there is no such executable."""
    if explicit:
        if os.sep not in explicit and (os.altsep is None or os.altsep not in explicit):
            found = shutil.which(explicit)
            if found is not None:
                return os.path.abspath(found)
        path = os.path.abspath(os.path.expanduser(explicit))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BuildError(f"--meteor {explicit}: not an executable file")
        return path
    found = shutil.which("meteor")
    if found is None:
        raise BuildError(
            "meteor is not installed or not on PATH (install it: https://www.meteor.com/install, "
            "or pass --meteor PATH)"
        )
    return found


def build(
    app_dir: str | Path,
    out: str | Path,
    meteor: str,
    extra_args: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
) -> Bundle:
    """Build the app in ``app_dir`` into ``out`` (``out/bundle``); the bundle, checked."""
    app = Path(app_dir).resolve()
    if not (app / ".meteor" / "release").is_file():
        raise BuildError(f"{app} is not a Meteor app (no .meteor/release)")
    out = Path(out).resolve()
    if out == app or app in out.parents:
        # meteor refuses to build into the app (it would bundle its own output next time)
        raise BuildError(f"the output directory {out} must be outside the app directory")
    command = [meteor, "build", "--directory", str(out), *extra_args]
    tail: deque[str] = deque(maxlen=20)
    try:
        process = subprocess.Popen(
            command, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as exc:
        raise BuildError(f"cannot run {meteor}: {exc.strerror or exc}") from None
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        if on_line is not None:
            on_line(line)
    code = process.wait()
    if code != 0:
        last = "\n".join(line for line in tail if line.strip())
        raise BuildError(f"meteor build failed (exit {code})" + (f":\n{last}" if last else ""))
    try:
        return load_bundle(out)
    except BundleError as exc:
        raise BuildError(f"meteor build finished but its output cannot be served: {exc}") from None
