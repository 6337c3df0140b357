"""`sessions serve` and `sessions project` with metrics, as real processes:
the flag and its variable, the calls a server answered, and the read
model's position, the log's head and the lag, scraped while `project` folds
what another process writes. And a bad --metrics-listen: one line, exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import sessions
from sessions.domain.commands import OpenSession
from sessions.domain.enums import SessionType
from sessions.store.application import Caller, Result, SessionsApplication
from sessions.store.urls import parse_store_url
from tests.metrics.metrics_support import Scrape, try_scrape
from tests.server_process import ServerProcess, free_port, run_sessions
from tests.waiting import wait_until

CALLER = Caller("metrics-test")


def _render(operation_id: str, now: datetime, result: Result) -> bytes:
    return operation_id.encode()


def _open(app: SessionsApplication, count: int, tag: str) -> None:
    for i in range(count):
        app.execute(OpenSession(f"{tag}-{i}", "agent", SessionType.AD_SYNC), CALLER, _render)


def test_project_reports_its_position_and_lag(store_url: str, tmp_path: Path) -> None:
    writer = SessionsApplication(parse_store_url(store_url))
    port = free_port()
    log = (tmp_path / "project.log").open("wb")
    project = None
    try:
        _open(writer, 3, "before")
        project = subprocess.Popen(
            [sys.executable, "-m", "sessions", "project", "--store", store_url, "--no-deadlines"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SESSIONS_METRICS_LISTEN": f"127.0.0.1:{port}"},
        )

        def folded_up_to(head: int) -> Scrape | None:
            assert project is not None and project.poll() is None, (tmp_path / "project.log").read_text()
            s = try_scrape(port)
            if s is None or not s.has("sessions_projection_position"):
                return None
            if s.value("sessions_log_head_position") == head and s.value("sessions_projection_position") == head:
                return s
            return None

        head = writer.recorder.max_notification_id()
        assert head
        assert wait_until(lambda: folded_up_to(head) is not None, 30, 0.05), (tmp_path / "project.log").read_text()
        s = folded_up_to(head)
        assert s is not None
        assert s.value("sessions_projection_lag_events") == 0
        assert s.value("sessions_projection_lag_seconds") == 0
        assert s.value("sessions_store_up") == 1
        assert s.value("sessions_parked_events") == 0
        assert s.value("sessions_projector_owner") == 1  # the only projector owns the read model
        assert s.labels_of("sessions_build_info") == [{"version": sessions.version()}]
        # The projector appends nothing and serves no calls.
        assert s.value("sessions_events_appended_total") == 0
        assert not s.has("grpc_server_started_total")

        # Written by another process while it runs: it folds them too.
        _open(writer, 2, "after")
        later = writer.recorder.max_notification_id()
        assert later > head
        assert wait_until(lambda: folded_up_to(later) is not None, 30, 0.05), (tmp_path / "project.log").read_text()
    finally:
        if project is not None:
            project.send_signal(signal.SIGTERM)
            assert project.wait(30) == 0, (tmp_path / "project.log").read_text()
        log.close()
        writer.close()


def test_serve_as_a_process_counts_its_calls(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        f"sqlite://{tmp_path}/s.db", tmp_path / "serve.log", env={"SESSIONS_METRICS_LISTEN": f"127.0.0.1:{port}"}
    )
    try:
        server.wait_serving()  # health checks, answered SERVING at last
        s = try_scrape(port)
        assert s is not None, server.log()
        checks = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
        assert s.value("grpc_server_handled_total", grpc_code="OK", **checks) >= 1
        assert s.value("grpc_server_handled_total", **checks) == s.value("grpc_server_started_total", **checks)
        assert s.value("sessions_store_up") == 1
        assert s.labels_of("sessions_build_info") == [{"version": sessions.version()}]
    finally:
        assert server.stop() == 0, server.log()




@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:http", ":9464", "127.0.0.1:70000"])
def test_a_bad_metrics_address_is_one_line_and_exit_2(value: str, tmp_path: Path) -> None:
    for command in (
        run_sessions("serve", "--store", "memory://", "--listen", "127.0.0.1:0", "--metrics-listen", value),
        run_sessions("project", "--store", "memory://", env={"SESSIONS_METRICS_LISTEN": value}),
    ):
        assert command.returncode == 2, command.stderr
        lines = command.stderr.strip().splitlines()
        assert len(lines) == 1 and "--metrics-listen" in lines[0], command.stderr


def test_a_busy_metrics_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        store = f"sqlite://{tmp_path}/s.db"
        for command in (
            run_sessions("serve", "--store", store, "--listen", "127.0.0.1:0", "--metrics-listen", taken),
            run_sessions("project", "--store", store, "--metrics-listen", taken),
        ):
            assert command.returncode == 2, command.stderr
            lines = command.stderr.strip().splitlines()
            assert len(lines) == 1 and "cannot listen" in lines[0], command.stderr
