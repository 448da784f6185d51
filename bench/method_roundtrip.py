"""What a method call costs: round trips of the bookstore's methods against one server.

    python bench/method_roundtrip.py [--calls N] [--clients C]

One client calls ``books.count`` (a read) and ``books.rename`` (a write, committed) N times
in a row and prints the median / p90 / p99 round trip; then C clients call ``books.count``
at once and it prints calls per second.  Uses ``$DATABASE_URL``'s server (a database
``ddpctl_bench_methods`` is created on it), else the embedded PostgreSQL, like ``ddpbench.py``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from ddpbench import ROOT, SERVER_ARGS, database_url, percentile


def timed_calls(client, method: str, params: list, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.call(method, *params)
        times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    options = parser.parse_args()
    url = database_url("ddpctl_bench_methods")
    os.environ["DATABASE_URL"] = url
    subprocess.run([sys.executable, "-m", "ddpctl", "migrate", "--noinput", *SERVER_ARGS[:4]],
                   check=True, capture_output=True)
    from ddpctl.testing import DDPClient, LiveServer

    with LiveServer(SERVER_ARGS, env={"DATABASE_URL": url}, cwd=str(ROOT)) as server:
        with DDPClient(server.ws_url) as client:
            client.connect()
            book = client.call("books.add", "Roundtrip", "bench@example.com")
            timed_calls(client, "books.count", [], 200)  # warm up
            print(f"{'method':<14} {'median µs':>10} {'p90 µs':>8} {'p99 µs':>8}")
            for method, params in (("books.count", []), ("books.rename", [book, "Renamed"])):
                times = timed_calls(client, method, params, options.calls)
                print(f"{method:<14} {percentile(times, 0.5):>10.0f} {percentile(times, 0.9):>8.0f} "
                      f"{percentile(times, 0.99):>8.0f}")
        clients = [DDPClient(server.ws_url) for _ in range(options.clients)]
        for client in clients:
            client.connect()
        per_client = max(1, options.calls // options.clients)
        threads = [threading.Thread(target=timed_calls, args=(c, "books.count", [], per_client))
                   for c in clients]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        print(f"{options.clients} clients calling books.count: "
              f"{per_client * options.clients / elapsed:,.0f} calls/s")
        for client in clients:
            client.close()


if __name__ == "__main__":
    main()
