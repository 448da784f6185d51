"""What ddpctl itself spends per delivered message in fan-out, without sockets.

    python bench/fanout_cost.py [--clients 1000] [--batches 200] [--profile]

Builds ``--clients`` connections (``ddpctl.server.connection.DDPConnection``) whose
transport encodes what it is given and drops it, each with one subscription holding one
book, then sends ``--batches`` batches of one ``changed`` message (a ``PreparedMessage``,
as an observer shares it) to every subscriber, letting the writers run after each batch.
Prints the process CPU time (``time.process_time``: less sensitive than wall time to other
processes on a shared machine) per delivered message, split into the fan-out (observer to
mergebox to send queue) and the writers (wake-up, batch, transport).  ``--profile`` adds a
cProfile listing.  Run it with the tree to measure first on ``sys.path`` (``PYTHONPATH``).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import gevent  # noqa: E402

from ddpctl.config import ServeConfig  # noqa: E402
from ddpctl.livedata.publish import PreparedMessage, Subscription  # noqa: E402
from ddpctl.server.connection import DDPConnection  # noqa: E402


class NullTransport:
    """A connected client that takes everything at once."""

    closed = False
    sent_at = 0.0

    def open(self) -> None:
        pass

    def receive(self) -> list:
        raise NotImplementedError

    def send(self, texts: list[str]) -> None:
        b"".join(t.encode() for t in texts)

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass

    def send_heartbeat(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    server = SimpleNamespace(config=ServeConfig(), connections=set())
    subs = []
    for _ in range(args.clients):
        conn = DDPConnection(server, NullTransport(), {})  # type: ignore[arg-type]
        conn.session.id, conn.session.version, conn.handle.id = "s", "1", "s"
        conn.session.subscriptions["1"] = "AllBooks"
        sub = Subscription(conn, "1", "AllBooks", [])
        conn._subs["1"] = sub
        subs.append(sub)
    doc = {"title": "t", "author_id": "1", "pages": 0, "published": None, "blurb": "", "genres_ids": []}
    added = PreparedMessage("added", "bookstore.book", "1", doc)
    for sub in subs:
        sub.send(added)
    gevent.sleep(0)
    spent = [0.0, 0.0]

    def run(batches: int) -> None:
        for number in range(batches):
            message = PreparedMessage("changed", "bookstore.book", "1", {"title": f"t{number}"})
            started = time.process_time()
            for sub in subs:
                sub.send(message)
            fanned = time.process_time()
            gevent.sleep(0)  # the writers run
            spent[0] += fanned - started
            spent[1] += time.process_time() - fanned

    run(20)  # warm up
    spent[:] = [0.0, 0.0]
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, args.batches)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    else:
        run(args.batches)
    delivered = args.batches * args.clients
    print(f"{(spent[0] + spent[1]) / delivered * 1e6:.2f} us CPU per delivered message "
          f"(fan-out {spent[0] / delivered * 1e6:.2f}, writers {spent[1] / delivered * 1e6:.2f}); "
          f"{args.clients} clients x {args.batches} batches")


if __name__ == "__main__":
    main()
