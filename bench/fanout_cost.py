"""What ddpctl itself spends per delivered message in fan-out, without sockets.

    python bench/fanout_cost.py [--clients 1000] [--batches 200] [--messages 1] [--profile]

Builds ``--clients`` connections (``ddpctl.server.connection.DDPConnection``) whose
transport encodes what it is given and drops it, each with one subscription holding ``--messages``
books, then sends ``--batches`` batches of ``--messages`` ``changed`` messages (``PreparedMessage``,
as an observer shares them, each subscriber given the batch as ``Observer.apply`` gives
it) to every subscriber, letting the writers run after each batch.
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
from ddpctl.server.websocket import text_frame  # noqa: E402


class NullTransport:
    """A connected client that takes everything at once."""

    closed = False
    sent_at = 0.0

    def open(self) -> None:
        pass

    def receive(self) -> list:
        raise NotImplementedError

    def send(self, texts: list[str]) -> None:
        b"".join([text_frame(t.encode()) for t in texts])

    def send_nowait(self, texts: list[str]) -> int:
        """The direct-write path (a socket that takes everything at once)."""
        b"".join([text_frame(t.encode()) for t in texts])
        return 0

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass

    def send_heartbeat(self) -> None:
        pass


def sockets(count: int) -> list:
    """``count`` server-side WebSocket transports over TCP loopback, as the server makes
    them; their clients' sockets stay open (kept here) and never read."""
    import socket

    from ddpctl.server.connection import RawTransport
    from ddpctl.server.websocket import WebSocket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    transports = []
    for _ in range(count):
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        server_side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ws = WebSocket(server_side.recv, server_side.send, server_side, 1 << 20)
        ws.peer = client  # type: ignore[attr-defined]
        transports.append(RawTransport(ws))
    listener.close()
    return transports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1, metavar="N",
                        help="changed messages per batch (each of another document)")
    parser.add_argument("--sockets", action="store_true",
                        help="real WebSockets over TCP loopback (the clients never read; the "
                             "kernel buffers what is sent): the send system calls counted too")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    server = SimpleNamespace(config=ServeConfig(), connections=set())
    subs = []
    transports = sockets(args.clients) if args.sockets else [NullTransport() for _ in range(args.clients)]
    for transport in transports:
        conn = DDPConnection(server, transport, {})  # type: ignore[arg-type]
        conn.session.id, conn.session.version, conn.handle.id = "s", "1", "s"
        conn.session.subscriptions["1"] = "AllBooks"
        sub = Subscription(conn, "1", "AllBooks", [])
        conn._subs["1"] = sub
        subs.append(sub)
    docs = {str(i): {"title": "t", "author_id": "1", "pages": 0, "published": None, "blurb": "",
                     "genres_ids": []} for i in range(1, args.messages + 1)}
    for doc_id, doc in docs.items():
        added = PreparedMessage("added", "bookstore.book", doc_id, doc)
        for sub in subs:
            sub.send(added)
    gevent.sleep(0)
    spent = [0.0, 0.0]

    def changed(doc_id: str, number: int) -> PreparedMessage:
        """As an observer makes it (its whole documents too, where this version takes them)."""
        before = docs[doc_id]
        after = docs[doc_id] = {**before, "title": f"t{number}"}
        try:
            return PreparedMessage("changed", "bookstore.book", doc_id, {"title": f"t{number}"}, None,
                                   before, after)
        except TypeError:
            return PreparedMessage("changed", "bookstore.book", doc_id, {"title": f"t{number}"})

    def run(batches: int) -> None:
        for number in range(batches):
            messages = [changed(doc_id, number) for doc_id in docs]
            started = time.process_time()
            for sub in subs:  # as Observer.apply does
                if hasattr(sub, "send_all"):
                    sub.send_all(messages)
                else:
                    for message in messages:
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
    delivered = args.batches * args.clients * args.messages
    print(f"{(spent[0] + spent[1]) / delivered * 1e6:.2f} us CPU per delivered message "
          f"(fan-out {spent[0] / delivered * 1e6:.2f}, writers {spent[1] / delivered * 1e6:.2f}); "
          f"{args.clients} clients x {args.batches} batches of {args.messages}")


if __name__ == "__main__":
    main()
