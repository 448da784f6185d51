"""Write the bookstore's front end as a bundle in `meteor build`'s format (./bundle).

    python examples/bookstore/frontend/build.py

The sources are plain files next to this script; ``ddpctl serve`` serves the result like
any Meteor build (the bookstore settings point DDPCTL_METEOR_BUNDLE at it).  Run it after
editing a source: a running server pushes the new version to open pages.
"""
from pathlib import Path

from ddpctl.meteor.writer import write_bundle

HERE = Path(__file__).resolve().parent


def build(out: Path = HERE / "bundle") -> Path:
    return write_bundle(
        out,
        js=(HERE / "client.js").read_bytes(),
        css=(HERE / "style.css").read_bytes(),
        head=(HERE / "head.html").read_text().rstrip("\n"),
        body=(HERE / "body.html").read_text().rstrip("\n"),
        app_id="bookstore.example",
    )


if __name__ == "__main__":
    print(f"wrote {build()}")
