"""`sessions serve --workers 2 --metrics-listen ...` as real processes, on
SQLite and PostgreSQL: one endpoint, at the flag's address, for the group.
The calls every worker answered are summed, the store's figures appear
once, and what a worker killed with SIGKILL counted stays counted; the
group's health is SERVING while it serves and never while it drains."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from tests.metrics.metrics_support import Scrape, scrape, try_scrape
from tests.scaleout.scaleout_support import AD_SYNC, Workers, alive
from tests.server_process import free_port, run_sessions
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

OPEN = {"grpc_service": "yandex.cloud.organizationmanager.v1.idp.SynchronizationSessionService",
        "grpc_method": "OpenSession"}
# Read once per scrape, whatever the number of workers.
ONCE = ["sessions_store_up", "sessions_log_head_position", "sessions_projection_position",
        "sessions_projection_lag_events", "sessions_projection_lag_seconds", "sessions_parked_events",
        "sessions_projector_owner", "sessions_build_info"]


def metrics_directory(workers: Workers) -> str | None:
    for line in workers.lines():
        if line["logger"] == "sessions" and line["message"].startswith("metrics: the group's"):
            return str(line["message"].split()[-1])
    return None


def test_one_endpoint_sums_every_worker(store_url: str, tmp_path: Path) -> None:
    port = free_port()
    workers = Workers(store_url, tmp_path / "serve.log", "--metrics-listen", f"127.0.0.1:{port}")
    calls = 0
    try:
        assert wait_until(lambda: len(workers.worker_pids()) == 2, 30, 0.05), workers.log_path.read_text()
        first = workers.worker_pids()

        def both_answered() -> bool:
            nonlocal calls
            workers.call_on_new_connections(4)
            calls += 4
            return workers.answered_by() >= set(first.values())

        assert wait_until(both_answered, 60, 0), (workers.answered_by(), first)
        # (each call is counted before its answer leaves)
        before = scrape(port)
        # Both workers answered, and the one endpoint counts every call.
        assert before.value("grpc_server_handled_total", grpc_code="OK", **OPEN) == calls
        assert before.value("grpc_server_started_total", **OPEN) == calls
        assert before.value("grpc_server_handling_seconds_count", **OPEN) == calls
        _read_once(before, owner=1.0)
        directory = metrics_directory(workers)
        assert directory is not None and os.path.isdir(directory)

        # A worker killed: what it counted stays in the sums; its
        # replacement counts on from there.
        os.kill(first[1], signal.SIGKILL)
        assert wait_until(lambda: workers.worker_pids()[1] != first[1], 30, 0.05), workers.log_path.read_text()
        replacement = workers.worker_pids()[1]
        after_kill = scrape(port)
        assert after_kill.value("grpc_server_handled_total", grpc_code="OK", **OPEN) == calls
        assert after_kill.value("grpc_server_handling_seconds_count", **OPEN) == calls
        # (its files were added into the retired ones, not kept one per pid)
        assert not os.path.exists(os.path.join(directory, f"counter_{first[1]}.db"))

        def replacement_answered() -> bool:
            nonlocal calls
            workers.call_on_new_connections(4)
            calls += 4
            return replacement in workers.answered_by()

        assert wait_until(replacement_answered, 60, 0)
        last = scrape(port)
        assert last.value("grpc_server_handled_total", grpc_code="OK", **OPEN) == calls
        assert last.value("grpc_server_started_total", **OPEN) == calls
        _read_once(last, owner=1.0)
    finally:
        code = workers.stop()
    assert code == 0, workers.log_path.read_text()[-3000:]
    assert not os.path.exists(directory)  # removed when the group stopped
    assert try_scrape(port) is None


def _read_once(s: Scrape, owner: float) -> None:
    """The store's figures, the projector's ownership and the build: one
    sample each (not one per worker), and no worker's pid in any label."""
    for name in ONCE:
        assert len(s.labels_of(name)) == 1, (name, s.labels_of(name))
    assert s.value("sessions_store_up") == 1
    assert s.value("sessions_projector_owner") == owner
    assert all("pid" not in s_.labels for s_ in s.samples)


def test_without_a_projector_the_group_says_no_owner(tmp_path: Path) -> None:
    store_url = f"sqlite://{tmp_path}/sessions.db"
    port = free_port()
    workers = Workers(store_url, tmp_path / "serve.log", "--metrics-listen", f"127.0.0.1:{port}", "--no-projector")
    try:
        assert wait_until(lambda: (try_scrape(port) or Scrape({}, [])).value("sessions_store_up") == 1, 30, 0.05), (
            workers.log_path.read_text()
        )
        assert not scrape(port).has("sessions_projector_owner")
    finally:
        assert workers.stop() == 0


def test_a_taken_metrics_port_stops_the_group_at_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run_sessions("serve", "--workers", "2", "--listen", f"127.0.0.1:{free_port()}",
                               "--store", f"sqlite://{tmp_path}/s.db", "--metrics-listen", f"127.0.0.1:{port}")
    assert refused.returncode == 2, refused.stderr
    assert "cannot listen" in refused.stderr
    assert "worker" not in refused.stderr  # (none was started)


def _health(target: str) -> tuple[int, str]:
    result = run_sessions("health", "--target", target, "--timeout", "5")
    return result.returncode, result.stdout + result.stderr


@pytest.mark.postgres
def test_the_group_is_serving_and_not_while_it_drains(postgres_url: str, tmp_path: Path) -> None:
    """SERVING from whichever worker answers while the group serves; once
    the parent is told to stop, NOT_SERVING or nothing listening, while a
    call in flight still drains (held here on a lock of the store's)."""
    workers = Workers(postgres_url, tmp_path / "serve.log", "--grace", "60")
    try:
        assert wait_until(lambda: len(workers.worker_pids()) == 2, 30, 0.05), workers.log_path.read_text()
        pids = workers.worker_pids()
        assert wait_until(lambda: (workers.call_on_new_connections(2), workers.answered_by() >= set(pids.values()))[1],
                          60, 0)
        for _ in range(6):  # new connections each: the kernel picks the worker
            code, said = _health(workers.target)
            assert code == 0 and "SERVING" in said, said

        # A write held in flight: its commit waits for the events table's lock.
        # EXCLUSIVE blocks only writers (the projector's reads go on), and
        # the wait below matches the write's own LOCK TABLE behind this holder.
        holder = psycopg.connect(postgres_url)
        holder.execute("LOCK TABLE sessions_events IN EXCLUSIVE MODE")
        outcome: dict[str, Any] = {}

        def write() -> None:
            with grpc.insecure_channel(workers.target) as channel:
                stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
                try:
                    stub.OpenSession(
                        service_pb2.OpenSessionRequest(subject_container_id="held", agent_id="a",
                                                       session_type=AD_SYNC),
                        timeout=90,
                    )
                    outcome["code"] = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    outcome["code"] = e.code()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert wait_until(lambda: _write_waiting_on(postgres_url, holder.info.backend_pid), 30, 0.05)
            workers.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: draining(workers) == set(pids.values()), 30, 0.05), workers.lines()[-5:]
            code, said = _health(workers.target)
            assert code == 1 and ("NOT_SERVING" in said or "UNAVAILABLE" in said), said
            # ... while the group still drains the call in flight.
            assert workers.proc.poll() is None and "code" not in outcome
        finally:
            holder.rollback()
            holder.close()
            writer.join(60)
        assert outcome["code"] == grpc.StatusCode.OK  # drained, not cut
    finally:
        code = workers.stop()
    assert code == 0, workers.log_path.read_text()[-3000:]
    assert not any(alive(pid) for pid in pids.values())


def draining(workers: Workers) -> set[int]:
    """The workers that said they stopped taking calls (health NOT_SERVING first)."""
    return {line["pid"] for line in workers.lines() if line["message"].startswith("shutting down") and "pid" in line}


def _write_waiting_on(store_url: str, holder_pid: int) -> bool:
    """Whether a write (its message, which locks the events table) waits for ``holder_pid``'s lock."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE '%%LOCK TABLE%%sessions_events%%' AND %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        ).fetchone()
    return bool(row and row[0])
