"""Hot code push: the ``meteor_autoupdate_clientVersions`` publication (packages/autoupdate).

One document per client arch (``_id`` = arch) with ``version``, ``versionRefreshable``,
``versionNonRefreshable``, ``versionReplaceable`` and the refreshable CSS ``assets``, plus
the legacy documents that make very old clients reload.  When the served bundle changes,
:meth:`Autoupdate.publish_bundle` sends every subscriber the differences: a client whose
``versionNonRefreshable`` changed reloads, one whose ``versionRefreshable`` changed swaps
its stylesheets.
"""
from __future__ import annotations

import logging
from typing import Any

from ..ddp.errors import match_failed
from ..livedata.publish import Subscription, publications
from .boilerplate import autoupdate_versions
from .bundle import Bundle

__all__ = ["COLLECTION", "Autoupdate", "client_version_documents"]

logger = logging.getLogger(__name__)
COLLECTION = "meteor_autoupdate_clientVersions"
_LEGACY = {"version": {"version": "outdated"}, "version-refreshable": {"version": "outdated"},
           "version-cordova": {"version": "outdated"}}


def client_version_documents(bundle: Bundle, path_prefix: str = "") -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for arch, versions in autoupdate_versions(bundle).items():
        css = bundle.programs[arch].css
        docs[arch] = {**versions, "assets": [{"url": path_prefix + item["url"]} for item in css]}
    docs.update(_LEGACY)
    return docs


class Autoupdate:
    """The publication, registered under Meteor's name while a bundle is served."""

    def __init__(self, bundle: Bundle, path_prefix: str = "") -> None:
        self.app_id = bundle.app_id
        self.path_prefix = path_prefix
        self.documents = client_version_documents(bundle, path_prefix)
        self.subscriptions: list[Subscription] = []

    def register(self) -> None:
        publications.register(COLLECTION, self.publish)

    def unregister(self) -> None:
        publications.unregister(COLLECTION)

    def publish(self, sub: Subscription, app_id: str | None = None) -> None:
        if app_id is not None and not isinstance(app_id, str):
            raise match_failed("meteor_autoupdate_clientVersions: appId must be a string")
        if app_id and self.app_id and app_id != self.app_id:
            sub.ready()  # another app's client: nothing for it
            return
        for doc_id, fields in self.documents.items():
            sub.added(COLLECTION, doc_id, fields)
        sub.ready()
        self.subscriptions.append(sub)
        sub.on_stop(lambda: self.subscriptions.remove(sub))

    def publish_bundle(self, bundle: Bundle) -> int:
        """Send subscribers what differs in ``bundle``; the number of documents that changed."""
        new = client_version_documents(bundle, self.path_prefix)
        old, self.documents = self.documents, new
        self.app_id = bundle.app_id
        changed = 0
        for doc_id, fields in new.items():
            before = old.get(doc_id)
            if before == fields:
                continue
            changed += 1
            for sub in list(self.subscriptions):
                if before is None:
                    sub.added(COLLECTION, doc_id, fields)
                else:
                    sub.changed(COLLECTION, doc_id, {k: v for k, v in fields.items() if before.get(k) != v},
                                [k for k in before if k not in fields])
        for doc_id in old.keys() - new.keys():
            changed += 1
            for sub in list(self.subscriptions):
                sub.removed(COLLECTION, doc_id)
        return changed
