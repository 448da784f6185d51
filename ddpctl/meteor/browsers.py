"""Which client program a browser gets: ``web.browser`` for modern browsers, else
``web.browser.legacy`` (Meteor's modern-browsers minimums and aliases)."""
from __future__ import annotations

import re

__all__ = ["MINIMUM_VERSIONS", "is_modern"]

# packages/modern-browsers: the minimums Meteor's own packages ask for.
MINIMUM_VERSIONS = {"chrome": 49, "edge": 12, "firefox": 45, "mobile_safari": 10, "opera": 38,
                    "safari": 10, "electron": 1}

# Most specific first: Edge and Opera also say "Chrome", Chrome also says "Safari".
_FAMILIES = [
    ("edge", re.compile(r"\b(?:Edge|Edg|EdgA|EdgiOS)/(\d+)")),
    ("opera", re.compile(r"\b(?:OPR|Opera)/(\d+)")),
    ("electron", re.compile(r"\bElectron/(\d+)")),
    ("chrome", re.compile(r"\b(?:HeadlessChrome|Chromium|Chrome|CriOS)/(\d+)")),
    ("firefox", re.compile(r"\b(?:Firefox|FxiOS)/(\d+)")),
    ("mobile_safari", re.compile(r"\bVersion/(\d+)[\d.]* Mobile/\S+ Safari/")),
    ("safari", re.compile(r"\bVersion/(\d+)[\d.]* Safari/")),
]


def is_modern(user_agent: str | None) -> bool:
    """True for a browser at or above Meteor's minimum for its family; unknown agents
    (bots, curl, very old browsers) are not modern."""
    if not user_agent:
        return False
    for family, pattern in _FAMILIES:
        match = pattern.search(user_agent)
        if match:
            return int(match.group(1)) >= MINIMUM_VERSIONS[family]
    return False
