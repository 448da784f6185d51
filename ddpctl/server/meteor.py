"""Serving a Meteor bundle in the server process, and hot code push when it changes on disk.

The bundle directory is watched with watchfiles (its blocking watch runs on gevent's thread
pool, so the event loop never waits on it).  On a change the bundle is read again; if it
is valid it replaces the served one and the new client versions go out on
``meteor_autoupdate_clientVersions`` (clients reload or swap their CSS), without a restart.
An invalid bundle (half written by ``meteor build``) is logged and the previous one kept;
the next change tries again.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent

from ..meteor.app import MeteorApp, MeteorOptions
from ..meteor.autoupdate import Autoupdate
from ..meteor.bundle import Bundle, BundleError, load_bundle
from .django_static import static_url_path
from .hosts import HostPolicy

__all__ = ["MeteorService", "django_resolves"]

logger = logging.getLogger(__name__)


def django_resolves(path: str) -> bool:
    """Does Django's URLconf route ``path`` (or, with APPEND_SLASH, ``path/``), or is it
    under a local ``STATIC_URL`` (WhiteNoise's middleware serves those)?"""
    from django.conf import settings
    from django.urls import Resolver404, resolve

    static = static_url_path()
    if static is not None and path.startswith(static):
        return True
    candidates = [path]
    if settings.APPEND_SLASH and not path.endswith("/"):
        candidates.append(path + "/")
    for candidate in candidates:
        try:
            resolve(candidate)
            return True
        except Resolver404:
            continue
    return False


class MeteorService:
    def __init__(self, bundle: Bundle, options: MeteorOptions, django_app: Any, watch: bool = True,
                 autoupdate_version: str | None = None, hosts: HostPolicy | None = None) -> None:
        self.bundle = bundle
        self.options = options
        self.watch = watch
        self._autoupdate_version = autoupdate_version
        root_url = None if hosts is None else (lambda environ: hosts.root_url(environ, options.root_url))
        self.app = MeteorApp(lambda: self.bundle, django_app, django_resolves, options, root_url)
        self.autoupdate = Autoupdate(bundle, self.app.path_prefix)
        self._stop = threading.Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self.autoupdate.register()
        if self.watch:
            self._greenlet = gevent.spawn(self._watch_loop)

    def stop(self) -> None:
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        self.autoupdate.unregister()

    def reload(self) -> bool:
        """Read the bundle again; True if it was valid and is now served."""
        try:
            bundle = load_bundle(self.bundle.directory, self.bundle.public_settings, self._autoupdate_version)
        except BundleError as exc:
            logger.error("the Meteor bundle changed but cannot be served (%s); "
                         "still serving the previous one", exc)
            return False
        self.bundle = bundle
        changed = self.autoupdate.publish_bundle(bundle)
        versions = ", ".join(f"{arch} {p.versions['version'][:10]}" for arch, p in bundle.programs.items())
        logger.info("Meteor bundle reloaded (%s); %d client version document(s) changed", versions, changed)
        return True

    def _signature(self) -> tuple[Any, ...]:
        """What changes when the bundle is rewritten: the directory and the control files."""
        directory = Path(self.bundle.directory)
        files = [directory, directory / "star.json",
                 *(program.directory / "program.json" for program in self.bundle.programs.values())]
        out = []
        for path in files:
            try:
                stat = path.stat()
                out.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def _watch_loop(self) -> None:
        """Reload on every batch of file events; and once a second, if the control files
        changed without an event reaching the watcher (the directory was replaced while
        the watch was being set up again)."""
        import watchfiles

        directory = Path(self.bundle.directory)
        pool = gevent.get_hub().threadpool
        seen = self._signature()
        while not self._stop.is_set():
            if not directory.is_dir():
                gevent.sleep(1.0)  # replaced wholesale (rm -rf, then written again)
                continue
            inode = directory.stat().st_ino
            changes = watchfiles.watch(directory, stop_event=self._stop, debounce=400, step=50,
                                       rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False)
            waiting = False
            try:
                while True:
                    waiting = True
                    batch = pool.apply(_next, (changes,))
                    waiting = False
                    if batch is None:
                        break
                    signature = self._signature()
                    if batch or signature != seen:
                        logger.debug("bundle files changed: %s", sorted(str(p) for _, p in batch)[:10])
                        self.reload()
                        seen = self._signature()
                    if not directory.is_dir() or directory.stat().st_ino != inode:
                        break  # replaced wholesale (meteor build does): watch the new directory
            except (FileNotFoundError, RuntimeError) as exc:  # the directory went away under the watcher
                logger.info("watching the Meteor bundle again after: %s", exc)
                gevent.sleep(0.5)
            finally:
                if not waiting:  # killed while a thread runs it: stop_event ends it there
                    changes.close()


def _next(iterator: Iterator[Any]) -> Any:
    return next(iterator, None)
