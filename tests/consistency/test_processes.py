"""Consistency across real processes on PostgreSQL: each promise the README
makes holds whatever the timing, because it rests on what the database
enforces (see projection.registry). Two `sessions serve --no-projector`
processes and a `sessions project`: every write acknowledged by one is what
the other reads next, through a rebuild that takes over while they write,
beside a process that was paused, and with no projector running at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc, session_pb2
from tests.projection.projection_support import Workload, make_app
from tests.projections_ops.ops_support import described, sessions_command
from tests.requests import created_users, report_request
from tests.server_process import ServerProcess, stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AD_SYNC = 1


def api(server: ServerProcess) -> service_pb2_grpc.SynchronizationSessionServiceStub:
    return service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)


def open_session(server: ServerProcess, container: str) -> str:
    answer = api(server).OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="agent", session_type=AD_SYNC),
        timeout=10,
    )
    response = service_pb2.OpenSessionResponse()
    answer.response.Unpack(response)
    assert response.result == service_pb2.SUCCESS, response
    return response.opened_session.session_id


def created(server: ServerProcess, session_id: str) -> int:
    return created_users(
        api(server).GetSession(service_pb2.GetSessionRequest(session_id=session_id), timeout=10).session
    )


class ProjectProcess:
    """`python -m sessions project` as a real process."""

    def __init__(self, store_url: str, log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessions", "project", "--store", store_url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@dataclass
class CrossChecks:
    """One thread writing through one process and reading through the other
    at once, in turns, each answer checked against what was acknowledged."""

    servers: tuple[ServerProcess, ...]
    session_ids: list[str]
    acknowledged: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checks: list[float] = field(default_factory=list)  # when each check passed
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.acknowledged = {sid: 0 for sid in self.session_ids}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CrossChecks:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def one(self, k: int) -> None:
        n = len(self.servers)
        writer, reader = self.servers[k % n], self.servers[(k + 1) % n]
        sid = self.session_ids[k % len(self.session_ids)]
        api(writer).ReportSessionProgress(report_request(sid), timeout=10)
        self.acknowledged[sid] += 1
        seen = created(reader, sid)
        if seen != self.acknowledged[sid]:
            self.failures.append(f"{sid}: {self.acknowledged[sid]} acknowledged, the other process read {seen}")
        self.checks.append(time.monotonic())

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set() and k < 20_000:
            try:
                self.one(k)
            except grpc.RpcError as e:
                self.failures.append(f"call {k}: {e.code()} {e.details()}")
            k += 1


def test_a_rebuild_under_writes_keeps_every_acknowledged_write_readable_everywhere(
    postgres_url: str, tmp_path: Path
) -> None:
    # A log worth rebuilding (in small batches, so that writes overlap it).
    app = make_app(postgres_url)
    Workload(app).run(1500, containers=20)
    app.close()
    project = ProjectProcess(postgres_url, tmp_path / "project.log")
    a = ServerProcess(postgres_url, tmp_path / "a.log", "--no-projector")
    b = ServerProcess(postgres_url, tmp_path / "b.log", "--no-projector")
    try:
        a.wait_serving()
        b.wait_serving()
        ids = [open_session(a, f"live-{k}") for k in range(6)]
        traffic = CrossChecks((a, b), ids).start()
        try:
            began = time.monotonic()
            rebuilt = sessions_command(
                "projections", "rebuild", "--keep-old", "--batch-size", "20", "--store", postgres_url
            )
            ended = time.monotonic()
            assert rebuilt.returncode == 0, described(rebuilt)
        finally:
            traffic.stop()
        assert traffic.failures == [], traffic.failures[:5]
        assert any(began <= t <= ended for t in traffic.checks), "no write overlapped the rebuild"

        # A process started after the takeover, and the two that ran through
        # it: each reads at once what any of them acknowledged.
        c = ServerProcess(postgres_url, tmp_path / "c.log", "--no-projector")
        try:
            c.wait_serving()
            after = CrossChecks((a, c, b), ids)
            after.acknowledged = dict(traffic.acknowledged)
            for k in range(60):
                after.one(k)
            assert after.failures == [], after.failures[:5]
        finally:
            c.stop()

        # A close through one process is what the other shows next.
        api(a).CloseSession(service_pb2.CloseSessionRequest(session_id=ids[0]), timeout=10)
        shown = api(b).GetSession(service_pb2.GetSessionRequest(session_id=ids[0]), timeout=10)
        assert shown.session.status == session_pb2.COMPLETED

        verified = sessions_command("projections", "verify", "--store", postgres_url)
        assert verified.returncode == 0, described(verified)
    finally:
        a.stop()
        b.stop()
        project.stop()


def test_a_process_that_was_paused_longer_than_any_window_reads_and_is_read_fresh(
    postgres_url: str, tmp_path: Path
) -> None:
    # P runs the projector (the shape that used to keep rows in memory); B is
    # paused (SIGSTOP) for longer than the 15 s after which a peer used to be
    # taken for gone, then writes at once.
    p = ServerProcess(postgres_url, tmp_path / "p.log")
    b = ServerProcess(postgres_url, tmp_path / "b.log", "--no-projector")
    try:
        p.wait_serving()
        b.wait_serving()
        sid = open_session(p, "c-paused")
        assert created(p, sid) == 0  # read once through P
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(2):
                api(p).ReportSessionProgress(report_request(sid), timeout=10)
            paused_until = time.monotonic() + 16
            while time.monotonic() < paused_until:  # (the pause is the scenario, not a wait for a result)
                assert created(p, sid) == 2
                time.sleep(0.5)
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        checks = CrossChecks((b, p), [sid])
        checks.acknowledged[sid] = 2
        for k in range(20):
            checks.one(2 * k)  # writes through B, reads through P
        assert checks.failures == []
    finally:
        p.stop()
        b.stop()


def test_with_no_projector_anywhere_no_answer_waits(postgres_url: str, tmp_path: Path) -> None:
    # Answers that change nothing (OPENED_SESSION_EXISTS, TOO_EARLY, a
    # repeated close) and keyed replays answer at once: nothing waits for a
    # projector, which here does not exist.
    a = ServerProcess(postgres_url, tmp_path / "a.log", "--no-projector", "--no-deadlines")
    try:
        a.wait_serving()
        stub = api(a)
        request = service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="agent", session_type=AD_SYNC)
        first = stub.OpenSession(request, timeout=10)
        exists = service_pb2.OpenSessionResponse()
        stub.OpenSession(request, timeout=10).response.Unpack(exists)
        assert exists.result == service_pb2.OPENED_SESSION_EXISTS
        opened = service_pb2.OpenSessionResponse()
        first.response.Unpack(opened)
        sid = opened.opened_session.session_id
        key = [("idempotency-key", "r-1")]
        reported = stub.ReportSessionProgress(report_request(sid), metadata=key, timeout=10)
        assert stub.ReportSessionProgress(report_request(sid), metadata=key, timeout=10) == reported
        close = service_pb2.CloseSessionRequest(session_id=sid)
        stub.CloseSession(close, timeout=10)
        stub.CloseSession(close, timeout=10)  # the same close again
        too_early = service_pb2.OpenSessionResponse()
        stub.OpenSession(request, timeout=10).response.Unpack(too_early)
        assert too_early.result == service_pb2.TOO_EARLY
        assert created(a, sid) == 1
    finally:
        a.stop()
