"""The command layer in several processes on one PostgreSQL: what the events
table's lock lets through.

Runs report_progress commands (no gRPC, no projector; rows written with the
events) from P processes of T threads each, every thread on a session of its
own and sending its next command as soon as the previous returns, and prints
for each configuration: commands/s, commits/s (group commit puts several
commands in one), the mean time of a commit seen from its process (including
any wait for the lock), the time commits spend in flight per second of the
run summed over the processes (above 1.0 means commits of different
processes waited for each other), and the process CPU per command.

The configurations run in turns, ``--rounds`` times; the best of each is
kept. Baseline: one process with all the threads (``1xT``), the best a
single process does with the same number of concurrent commands.

    .venv/bin/python bench/commit_lock.py [--threads 16] [--seconds 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

from sessions.store import recorders  # noqa: E402


def _worker(url: str, ids: list[str], seconds: float, out: Any) -> None:
    commits = {"n": 0, "seconds": 0.0}
    lock = threading.Lock()
    real = recorders.PostgresSessionsRecorder._insert_one

    def timed(self: Any, events: Any, kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return real(self, events, kwargs)
        finally:
            with lock:
                commits["n"] += 1
                commits["seconds"] += time.perf_counter() - began

    recorders.PostgresSessionsRecorder._insert_one = timed  # type: ignore[method-assign]
    cpu = time.process_time()
    rate = suite.command_rate(url, ids, seconds)
    out.put({"rate": rate, "cpu": time.process_time() - cpu, **commits})


def run(url: str, processes: int, threads: int, seconds: float) -> dict[str, float]:
    app = suite.open_app(url)
    try:
        ids = suite.open_sessions(app, processes * threads, f"lock-{processes}x{threads}-{time.time_ns()}")
    finally:
        app.close()
    out: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_worker, args=(url, ids[k * threads:(k + 1) * threads], seconds, out))
        for k in range(processes)
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    rate = sum(r["rate"] for r in results)
    commits = sum(r["n"] for r in results)
    in_flight = sum(r["seconds"] for r in results)
    return {
        "commands/s": rate,
        "commits/s": commits / seconds,
        "commit ms": in_flight / commits * 1e3 if commits else 0.0,
        "commits in flight": in_flight / seconds,
        "CPU ms/command": sum(r["cpu"] for r in results) / (rate * seconds) * 1e3 if rate else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16, help="concurrent commands in all (default 16)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SESSIONS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database on the server (a new one is created beside it)",
    )
    args = parser.parse_args()
    configs = [(1, 1), (1, args.threads), (2, args.threads // 2)]
    best: dict[tuple[int, int], dict[str, float]] = {}
    with suite.store("postgresql", args.postgres) as url:
        for _ in range(args.rounds):
            for processes, threads in configs:
                result = run(url, processes, threads, args.seconds)
                key = (processes, threads)
                if key not in best or result["commands/s"] > best[key]["commands/s"]:
                    best[key] = result
    for (processes, threads), result in best.items():
        figures = ", ".join(f"{name} {value:,.2f}" for name, value in result.items())
        print(f"{processes}x{threads}: {figures}")
    one = best[(1, args.threads)]["commands/s"]
    two = best[(2, args.threads // 2)]["commands/s"]
    print(f"2x{args.threads // 2} / 1x{args.threads}: {two / one:.2f}x (best of {args.rounds} rounds each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
