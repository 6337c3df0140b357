"""How fast one long session's history reads, per backend. Prints figures; asserts nothing.

Issue 5 asks that 10,000 events of one session "stream out in well under a
second". The bench writes one session of --events events (SessionOpened, then
progress reports and heartbeats in turn; the schedule's events too, so the
session verifies), then times, best of --repeat runs:

  (a) session_history() fully consumed (in process: rows, decode, fold, message);
  (b) AuditService.StreamHistory fully consumed over a real gRPC server
      started in this process (SessionsServer, port 0), and its pages built
      in process without gRPC (the servicer called directly);
  (c) AuditService.GetSessionAt(version = half) and (as_of = the middle
      event's time), and the same two reads in process;
  for comparison: the raw rows (stream_records), the library's decoded read
  (app.events.get) and `audit verify SESSION_ID` (check_session).

Writing the session is setup and not timed: the aggregate is built in memory
by its own commands and saved in chunks with app.save.

Usage:
    .venv/bin/python bench/audit_history.py [--events N] [--backends sqlite,postgresql] [--profile]

--profile prints the top of a cProfile of (a), and of (b) in process, on
each backend.
PostgreSQL: a database named sessions_bench_<random> is created on the server
of --postgres (default $SESSIONS_BENCH_POSTGRES or
postgresql://postgres@127.0.0.1:5432/test) and dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import platform
import pstats
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from sessions.api.audit import AuditService
from sessions.api.protos import audit_pb2, audit_pb2_grpc
from sessions.audit.chain_check import check_session
from sessions.audit.history import (
    session_as_of,
    session_at_version,
    session_history,
)
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType, SyncMode
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.schedule import SyncSchedule
from sessions.domain.session import Session
from sessions.server import SessionsServer
from sessions.store.application import SessionsApplication
from sessions.store.records import stream_records
from sessions.store.urls import parse_store_url
from sessions.wire import timestamp

PRINCIPAL = "bench"
POLICY = Policy()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 500
REPORTS = [
    [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 3, 1),))],
    [
        ProgressEntry(RelatedObjectType.GROUP, (ChangeCount(ChangeType.UPDATE, 2, 0),)),
        ProgressEntry(
            RelatedObjectType.MEMBERSHIP,
            (ChangeCount(ChangeType.CREATE, 5, 0), ChangeCount(ChangeType.DELETE, 1, 0)),
        ),
    ],
]


from projector_and_writes import store  # noqa: E402  (one way to make a throwaway store)


def write_session(app: SessionsApplication, events: int) -> tuple[str, datetime]:
    """One session of ``events`` events; return its id and its middle event's time."""
    now = T0
    schedule = SyncSchedule.start("bench-container", SessionType.AD_SYNC, now=now, principal=PRINCIPAL)
    session = Session(
        id=f"ses-bench-{uuid.uuid4().hex[:8]}",
        subject_container_id="bench-container",
        agent_id="bench-agent",
        session_type=SessionType.AD_SYNC,
        sync_mode=SyncMode.FULL_SYNC,
        expires_at=now + POLICY.session_ttl,
        principal=PRINCIPAL,
        idempotency_key="",
        timestamp=now,
    )
    schedule.session_started(
        session_id=session.id, sync_mode=SyncMode.FULL_SYNC, principal=PRINCIPAL, idempotency_key="", timestamp=now
    )
    app.save(schedule, session)
    middle = T0
    for i in range(1, events):
        now = T0 + timedelta(seconds=i)
        if i % 3 == 2:
            session.heartbeat(now=now, policy=POLICY, principal=PRINCIPAL)
        else:
            session.report_progress(
                REPORTS[i % 2], now=now, policy=POLICY, principal=PRINCIPAL, idempotency_key=f"k{i}"
            )
        if session.version == events // 2:
            middle = now
        if i % CHUNK == 0:
            app.save(session)
    app.save(session)
    assert session.version == events, session.version
    return session.id, middle


def best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def consume(iterable: Any) -> int:
    n = 0
    for _ in iterable:
        n += 1
    return n


def bench_backend(url: str, events: int, repeat: int, profile: bool) -> dict[str, str]:
    app = SessionsApplication(parse_store_url(url), policy=POLICY)
    figures: dict[str, str] = {}
    try:
        start = time.perf_counter()
        sid, middle = write_session(app, events)
        figures["write the session (setup, s)"] = f"{time.perf_counter() - start:.1f}"

        t, n = best(repeat, lambda: len(stream_records(app.recorder, sid)))
        assert n == events
        figures["raw rows: stream_records (ms)"] = f"{t * 1000:.0f}"
        t, n = best(repeat, lambda: consume(app.events.get(sid)))
        assert n == events
        figures["library decoded read: app.events.get (ms)"] = f"{t * 1000:.0f}"

        t, n = best(repeat, lambda: consume(session_history(app, sid)))
        assert n == events
        figures["(a) session_history consumed (ms)"] = f"{t * 1000:.0f}"
        figures["(a) events/s"] = f"{events / t:,.0f}"

        service = AuditService(app)
        request = audit_pb2.StreamHistoryRequest(session_id=sid)
        t, n = best(repeat, lambda: sum(len(p.entries) for p in service.StreamHistory(request, None)))
        assert n == events
        figures["(b) StreamHistory pages, in process (ms)"] = f"{t * 1000:.0f}"

        half = events // 2
        t, s = best(repeat, lambda: session_at_version(app, sid, half))
        assert s.version == half
        figures["(c) session_at_version(half), in process (ms)"] = f"{t * 1000:.1f}"
        t, (s, _) = best(repeat, lambda: session_as_of(app, sid, middle))
        assert s.version == half
        figures["(c) session_as_of(middle), in process (ms)"] = f"{t * 1000:.1f}"

        t, broken = best(repeat, lambda: check_session(app, sid))
        assert broken is None, broken
        figures["audit verify SESSION_ID: check_session (ms)"] = f"{t * 1000:.0f}"

        if profile:
            for name, run in (
                ("session_history", lambda: consume(session_history(app, sid))),
                ("StreamHistory in process", lambda: consume(service.StreamHistory(request, None))),
            ):
                profiler = cProfile.Profile()
                profiler.enable()
                run()
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
                print(f"\n--- cProfile of {name}, {app.settings.description} ---")
                print(out.getvalue())
    finally:
        app.close()

    server = SessionsServer(url, "127.0.0.1:0", policy=POLICY, run_projector=False, run_deadlines=False)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        request = audit_pb2.StreamHistoryRequest(session_id=sid)
        t, n = best(repeat, lambda: sum(len(page.entries) for page in stub.StreamHistory(request)))
        assert n == events
        figures["(b) gRPC StreamHistory consumed (ms)"] = f"{t * 1000:.0f}"
        figures["(b) events/s"] = f"{events / t:,.0f}"
        at_half = audit_pb2.GetSessionAtRequest(session_id=sid, version=half)
        t, answer = best(repeat, lambda: stub.GetSessionAt(at_half))
        assert answer.version == half
        figures["(c) gRPC GetSessionAt(version=half) (ms)"] = f"{t * 1000:.1f}"
        at_middle = audit_pb2.GetSessionAtRequest(session_id=sid, as_of=timestamp(middle))
        t, answer = best(repeat, lambda: stub.GetSessionAt(at_middle))
        assert answer.version == half
        figures["(c) gRPC GetSessionAt(as_of=middle) (ms)"] = f"{t * 1000:.1f}"
    finally:
        channel.close()
        server.stop(grace=1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is shown")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of (a)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SESSIONS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sessions").setLevel(logging.ERROR)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, str]] = {}
    for backend in backends:
        with store(backend, args.postgres) as url:
            results[backend] = bench_backend(url, args.events, args.repeat, args.profile)

    print(
        f"\n{args.events} events in one session; best of {args.repeat}; "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}"
    )
    rows = list(dict.fromkeys(k for r in results.values() for k in r))
    width = max(len(r) for r in rows) + 2
    print(" " * width + "".join(f"{b:>14}" for b in backends))
    for row in rows:
        print(f"{row:<{width}}" + "".join(f"{results[b].get(row, '-'):>14}" for b in backends))


if __name__ == "__main__":
    sys.exit(main())
