"""Projector throughput and write latency, per backend. Prints figures; asserts nothing.

1. Projector catch-up: events/s folding a log of N events into an empty read
   model (a fresh Projector over the whole log, batches of --batch-size).
2. The library's own decoded read rate over the same log
   (recorder.select_notifications in batches + mapper.to_domain_event for
   each), and the ratio projector / read rate: how much of the read path's
   speed the fold-and-write keeps.
3. ReportSessionProgress latency through a real gRPC server started in this
   process (SessionsServer, port 0): the call answers once its change is in
   the read model (read-your-writes: its rows are written with its events),
   and each answer is checked with a GetSession. Compared with the application command alone (no gRPC, no
   wait) and with a raw ``app.save()`` of one event.

Usage:
    .venv/bin/python bench/projector_and_writes.py [--events N] [--backends sqlite,postgresql]

PostgreSQL: a database named sessions_bench_<random> is created on the server
of --postgres (default $SESSIONS_BENCH_POSTGRES or
postgresql://postgres@127.0.0.1:5432/test) and dropped at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
from eventsourcing.persistence import JSONTranscoder, Mapper
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessions.api.operations import renderer
from sessions.api.protos import service_pb2, service_pb2_grpc, session_pb2
from sessions.domain.commands import OpenSession, ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType, SyncMode
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.session import Session
from sessions.projection.projector import DEFAULT_BATCH_SIZE, Projector
from sessions.projection.row_tables import open_rows
from sessions.server import SessionsServer
from sessions.store.application import Caller, SessionsApplication
from sessions.store.operations import OperationRecord
from sessions.store.urls import parse_store_url

PRINCIPAL = "bench"
POLICY = Policy()


# --- stores -------------------------------------------------------------------------------


@contextmanager
def store(backend: str, postgres_admin: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sessions_bench_") as folder:
            yield f"sqlite://{folder}/sessions.db"
        return
    if backend != "postgresql":
        raise SystemExit(f"unknown backend {backend!r}: use sqlite and/or postgresql")
    name = f"sessions_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_app(url: str) -> SessionsApplication:
    return SessionsApplication(parse_store_url(url), policy=POLICY)


def head(app: SessionsApplication) -> int:
    return app.recorder.max_notification_id() or 0


# --- the log ------------------------------------------------------------------------------


def random_report(rng: random.Random) -> list[ProgressEntry]:
    return [
        ProgressEntry(
            object_type,
            tuple(
                ChangeCount(change_type, rng.randint(0, 1000), rng.randint(0, 10))
                for change_type in rng.sample(list(ChangeType), rng.randint(1, 3))
            ),
        )
        for object_type in rng.sample(list(RelatedObjectType), rng.randint(1, 3))
    ]


def write_log(app: SessionsApplication, events: int) -> int:
    """About ``events`` events: sessions opened through the command, then
    rounds in which every session reports progress (now and then a heartbeat)
    and all of them are saved with an operation record in one write, so that
    the log interleaves many sessions, as many agents writing at once would."""
    rng = random.Random(1)
    sessions = max(10, min(500, events // 100))
    session_ids: list[str] = []

    def capture(operation_id: str, now: datetime, result) -> bytes:  # type: ignore[no-untyped-def]
        session_ids.append(result.session.id)
        return renderer("OpenSession", PRINCIPAL)(operation_id, now, result)

    for i in range(sessions):
        app.execute(OpenSession(f"bench-container-{i}", "agent", SessionType.AD_SYNC), Caller(PRINCIPAL), capture)
    loaded = [app.get_session(sid) for sid in session_ids]
    round_number = 0
    while head(app) < events:
        now = datetime.now(UTC)
        for session in loaded:
            if rng.random() < 0.1:
                session.heartbeat(now=now, policy=POLICY, principal=PRINCIPAL)
            else:
                session.report_progress(random_report(rng), now=now, policy=POLICY, principal=PRINCIPAL)
        record = OperationRecord(
            id=f"opbench{round_number:013d}",
            method="Bench",
            session_id="",
            payload=b"",
            principal=PRINCIPAL,
            idempotency_key="",
            timestamp=now,
        )
        app.save(*loaded, record)
        round_number += 1
    return head(app)


# --- 1 and 2: folding and reading -----------------------------------------------------------


def library_mapper(app: SessionsApplication) -> Mapper[Any]:
    """The library's own mapper and JSONTranscoder with the store's
    transcodings: the baseline, whatever codec the store itself uses."""
    transcoder = JSONTranscoder()
    app.register_transcodings(transcoder)
    return Mapper(transcoder)


def read_all(app: SessionsApplication, batch: int) -> int:
    mapper = library_mapper(app)
    position = count = 0
    while True:
        notifications = app.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )
        if not notifications:
            return count
        for notification in notifications:
            mapper.to_domain_event(notification)
        count += len(notifications)
        position = notifications[-1].id


def bench_fold_and_read(url: str, batch_size: int) -> dict[str, float]:
    app = open_app(url)
    try:
        read_all(app, batch_size)  # warm the caches the same way for both
        view = open_rows(app)
        projector = Projector(app, view, batch_size=batch_size)
        began = time.perf_counter()
        folded = projector.catch_up()
        fold_seconds = time.perf_counter() - began
        began = time.perf_counter()
        read = read_all(app, batch_size)
        read_seconds = time.perf_counter() - began
        return {
            "events": folded,
            "fold_rate": folded / fold_seconds,
            "fold_seconds": fold_seconds,
            "read_rate": read / read_seconds,
            "read_seconds": read_seconds,
        }
    finally:
        app.close()


# --- 3: write latency -------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "mean": statistics.fmean(ordered)}


def report_request(session_id: str) -> service_pb2.ReportSessionProgressRequest:
    return service_pb2.ReportSessionProgressRequest(
        session_id=session_id,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=RelatedObjectType.USER.value,
                change_info=[
                    session_pb2.ChangeInfo(change_type=ChangeType.CREATE.value, successful=1)
                ],
            )
        ],
    )


def users_created(session: session_pb2.SynchronizationSession) -> int:
    for entry in session.progress_entries:
        if entry.object_type == RelatedObjectType.USER.value:
            for change in entry.change_info:
                if change.change_type == ChangeType.CREATE.value:
                    return change.successful
    return 0


def bench_grpc(url: str, calls: int, warmup: int = 20) -> dict[str, float]:
    server = SessionsServer(url, "127.0.0.1:0")
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            != health_pb2.HealthCheckResponse.SERVING
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become SERVING within 60 s")
            time.sleep(0.05)
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
        opened = stub.OpenSession(
            service_pb2.OpenSessionRequest(
                subject_container_id=f"bench-grpc-{uuid.uuid4().hex[:8]}",
                agent_id="agent",
                session_type=SessionType.AD_SYNC.value,
            ),
            timeout=30,
        )
        metadata = service_pb2.OpenSessionMetadata()
        opened.metadata.Unpack(metadata)
        session_id = metadata.session_id
        request = report_request(session_id)
        latencies: list[float] = []
        reads: list[float] = []
        stale_reads = 0
        for i in range(warmup + calls):
            began = time.perf_counter()
            stub.ReportSessionProgress(request, timeout=30)
            elapsed = time.perf_counter() - began
            if i >= warmup:
                latencies.append(elapsed)
            # Read-your-writes: the answer came after the projector applied it.
            began = time.perf_counter()
            got = stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id), timeout=30)
            if i >= warmup:
                reads.append(time.perf_counter() - began)
            if users_created(got.session) != i + 1:
                stale_reads += 1
        return {
            **percentiles(latencies),
            "stale_reads": stale_reads,
            "get_p50": percentiles(reads)["p50"],
            "session_id": session_id,  # type: ignore[dict-item]
        }
    finally:
        channel.close()
        server.stop(grace=1)


def bench_command(url: str, session_id: str, calls: int, warmup: int = 20) -> dict[str, float]:
    """The same report through the application alone: load, decide, save the
    event and the operation record; no gRPC, no waiting for the projector."""
    app = open_app(url)
    try:
        entries = [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 1, 0),))]
        render = renderer("ReportSessionProgress", PRINCIPAL)
        latencies = []
        for i in range(warmup + calls):
            began = time.perf_counter()
            app.execute(ReportProgress(session_id, entries), Caller(PRINCIPAL), render)
            if i >= warmup:
                latencies.append(time.perf_counter() - began)
        return percentiles(latencies)
    finally:
        app.close()


def bench_raw_save(url: str, calls: int, warmup: int = 20) -> dict[str, float]:
    """The floor: ``app.save()`` of one event (a heartbeat) on an aggregate
    already in memory."""
    app = open_app(url)
    try:
        now = datetime.now(UTC)
        session = Session(
            id=f"sesbench{uuid.uuid4().hex[:12]}",
            subject_container_id="bench-raw-save",
            agent_id="agent",
            session_type=SessionType.AD_SYNC,
            sync_mode=SyncMode.FULL_SYNC,
            expires_at=now + POLICY.session_ttl,
            principal=PRINCIPAL,
            idempotency_key="",
            timestamp=now,
        )
        app.save(session)
        latencies = []
        for i in range(warmup + calls):
            session.heartbeat(now=datetime.now(UTC), policy=POLICY, principal=PRINCIPAL)
            began = time.perf_counter()
            app.save(session)
            if i >= warmup:
                latencies.append(time.perf_counter() - began)
        return percentiles(latencies)
    finally:
        app.close()


# --- the run --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events in the log (default 20000)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="default sqlite,postgresql")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per latency figure")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SESSIONS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database on the server to bench on (a new one is created beside it)",
    )
    args = parser.parse_args()
    logging.getLogger("sessions").setLevel(logging.ERROR)  # the server's start/stop lines
    print(
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs, {cpu_model()}; "
        f"Python {platform.python_version()}; {args.events} events, batch {args.batch_size}, "
        f"{args.calls} calls"
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        with store(backend, args.postgres) as url:
            print(f"\n[{backend}] writing the log ...", flush=True)
            app = open_app(url)
            began = time.perf_counter()
            written = write_log(app, args.events)
            app.close()
            print(f"  {written} events written in {time.perf_counter() - began:.1f}s (setup)")
            fold = bench_fold_and_read(url, args.batch_size)
            print(
                f"  projector catch-up: {fold['events']:.0f} events in {fold['fold_seconds']:.2f}s "
                f"= {fold['fold_rate']:.0f} events/s"
            )
            print(
                f"  library decoded read: {fold['read_rate']:.0f} events/s; "
                f"projector / read = {fold['fold_rate'] / fold['read_rate']:.2f}"
            )
            grpc_figures = bench_grpc(url, args.calls)
            print(
                f"  ReportSessionProgress via gRPC (read-your-writes): p50 {ms(grpc_figures['p50'])} "
                f"p95 {ms(grpc_figures['p95'])} p99 {ms(grpc_figures['p99'])} ms; "
                f"stale GetSession after the answer: {grpc_figures['stale_reads']}; "
                f"GetSession p50 {ms(grpc_figures['get_p50'])} ms"
            )
            command = bench_command(url, str(grpc_figures["session_id"]), args.calls)
            print(f"  report_progress command alone: p50 {ms(command['p50'])} ms")
            raw = bench_raw_save(url, args.calls)
            print(f"  app.save() of one event: p50 {ms(raw['p50'])} ms")
            results[backend] = {"fold": fold, "grpc": grpc_figures, "command": command, "raw": raw}

    print("\n" + "=" * 96)
    header = f"{'':44}" + "".join(f"{b:>26}" for b in results)
    print(header)
    rows = [
        ("projector catch-up (events/s)", lambda r: f"{r['fold']['fold_rate']:.0f}"),
        ("library decoded read (events/s)", lambda r: f"{r['fold']['read_rate']:.0f}"),
        ("projector / read rate", lambda r: f"{r['fold']['fold_rate'] / r['fold']['read_rate']:.2f}"),
        ("gRPC ReportSessionProgress p50/p95/p99 (ms)",
         lambda r: "/".join(ms(r["grpc"][p]) for p in ("p50", "p95", "p99"))),
        ("  stale reads after the answer", lambda r: f"{r['grpc']['stale_reads']:.0f}"),
        ("gRPC GetSession p50 (ms, round-trip floor)", lambda r: ms(r["grpc"]["get_p50"])),
        ("report_progress command p50/p95/p99 (ms)",
         lambda r: "/".join(ms(r["command"][p]) for p in ("p50", "p95", "p99"))),
        ("app.save() one event p50/p95/p99 (ms)", lambda r: "/".join(ms(r["raw"][p]) for p in ("p50", "p95", "p99"))),
        ("gRPC p50 / app.save() p50", lambda r: f"{r['grpc']['p50'] / r['raw']['p50']:.1f}x"),
        ("gRPC p50 / command p50", lambda r: f"{r['grpc']['p50'] / r['command']['p50']:.1f}x"),
    ]
    for label, cell in rows:
        print(f"{label:44}" + "".join(f"{cell(r):>26}" for r in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
