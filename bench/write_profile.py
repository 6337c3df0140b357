"""Where a ReportSessionProgress command spends its CPU, in this process.

    .venv/bin/python bench/write_profile.py [--backend postgresql|sqlite] [--calls N] [--profile]

The command as the server runs it (``app.execute`` on an application built
with ``WriteThrough``: load from the cache, decide, render the answer, save
the event, its operation record and the session's row in one transaction),
on one session, N times after 100 warm-up calls: CPU (``process_time``) and
wall time per call. With ``--profile``, N more calls under cProfile (CPU
clock) and the inclusive CPU of the parts of the path, per call and as a
share of the whole (cProfile inflates every figure about 2.5x; the shares
are what to read). PostgreSQL: a database ``sessions_bench_<random>`` is
created and dropped (``--postgres URL``, as projector_and_writes.py).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import projector_and_writes as pw  # noqa: E402
from suite import open_sessions  # noqa: E402

from sessions.api.operations import renderer  # noqa: E402
from sessions.domain.commands import ReportProgress  # noqa: E402
from sessions.domain.enums import ChangeType, RelatedObjectType  # noqa: E402
from sessions.domain.progress import ChangeCount, ProgressEntry  # noqa: E402
from sessions.projection.write_through import WriteThrough  # noqa: E402
from sessions.store.application import SessionsApplication  # noqa: E402
from sessions.store.unit_of_work import Caller  # noqa: E402
from sessions.store.urls import parse_store_url  # noqa: E402

# (label, the functions whose inclusive time it is)
PARTS = [
    ("the whole command (unit_of_work.run)", r"unit_of_work.py:\d+\(run\)"),
    ("the store's transaction (PostgreSQL: the one message; SQLite: insert_events)",
     r"recorders.py:\d+\(_insert_one\)|eventsourcing/sqlite.py:\d+\(insert_events\)"),
    ("  rendering the message's values (psycopg's mogrify)", r"recorders.py:\d+\(execute\)"),
    ("  the rows (PostgreSQL: the function's call; SQLite: registry and upsert)", r"write_through.py:\d+\(write\)"),
    ("decide (Session.report_progress)", r"session.py:\d+\(report_progress\)"),
    ("hash chain links (the event's, the operation record's)", r"chain.py:\d+\(link_for\)"),
    ("encode event, operation record, state (to_stored_event)", r"persistence.py:\d+\(to_stored_event\)"),
    ("build the row (SessionFold.row)", r"fold.py:\d+\(row\)"),
    ("request digest (operations.request_digest)", r"operations.py:\d+\(request_digest\)"),
    ("render the Operation", r"api/operations.py:\d+\(render\)"),
    ("load from the cache (UnitOfWork.get)", r"unit_of_work.py:\d+\(get\)"),
]


def breakdown(stats: pstats.Stats, calls: int) -> None:
    spent: dict[str, float] = {}
    for (file, line, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{file}:{line}({name})"
        for label, pattern in PARTS:
            if re.search(pattern, key):
                spent[label] = spent.get(label, 0.0) + cumulative
    whole = spent.get(PARTS[0][0], 0.0) or 1.0
    for label, _ in PARTS:
        value = spent.get(label, 0.0)
        print(f"  {label:58s} {value / calls * 1e3:7.3f} ms  {value / whole * 100:5.1f} %")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SESSIONS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    with pw.store(args.backend, args.postgres) as url:
        app = SessionsApplication(parse_store_url(url), policy=pw.POLICY, with_events=WriteThrough)
        try:
            session_id = open_sessions(app, 1, "profile")[0]
            render = renderer("ReportSessionProgress", "bench")
            entries = (ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 1, 0),)),)
            caller = Caller("bench")

            def calls(n: int) -> None:
                for _ in range(n):
                    app.execute(ReportProgress(session_id, entries), caller, render)

            calls(100)
            cpu, wall = time.process_time(), time.perf_counter()
            calls(args.calls)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{args.backend}: {args.calls} commands, CPU {cpu / args.calls * 1e3:.3f} ms per call, "
                  f"wall {wall / args.calls * 1e3:.3f} ms per call")
            if args.profile:
                profiler = cProfile.Profile(time.process_time)
                profiler.runcall(calls, args.calls)
                print("cProfile (CPU clock), inclusive, per call and share of the whole command:")
                breakdown(pstats.Stats(profiler), args.calls)
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
