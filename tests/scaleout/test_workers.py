"""`sessions serve --workers 2` as real processes on PostgreSQL: calls reach
both workers (each access line names its worker's pid), a killed worker is
replaced, the projector runs once, and SIGTERM drains and stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from tests.scaleout.scaleout_support import status
from tests.server_process import free_port, stop_process
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AD_SYNC = 1


class Workers:
    def __init__(self, store_url: str, log_path: Path, count: int = 2):
        self.target = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sessions",
                "serve",
                "--workers",
                str(count),
                "--listen",
                self.target,
                "--store",
                store_url,
                "--log-format",
                "json",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # (a line cut short while being written)
        return found

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest start, as the parent logged them."""
        pids = {}
        for line in self.lines():
            if (
                line["logger"] == "sessions.workers"
                and line["message"].startswith("worker ")
                and "started" in line["message"]
            ):
                words = line["message"].split()
                pids[int(words[1])] = int(words[-1].rstrip(")"))
        return pids

    def answered_by(self) -> set[int]:
        """The pids of the workers that wrote access lines."""
        return {line["pid"] for line in self.lines() if line["logger"] == "sessions.access"}

    def call_on_new_connections(self, calls: int) -> None:
        """Each call on a connection of its own: the kernel spreads
        connections (not calls) among the workers."""
        for k in range(calls):
            with grpc.insecure_channel(self.target) as channel:
                stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
                stub.OpenSession(
                    service_pb2.OpenSessionRequest(subject_container_id=f"c-{k}", agent_id="a", session_type=AD_SYNC),
                    timeout=10,
                    wait_for_ready=True,
                )

    def stop(self) -> int:
        code = stop_process(self.proc, 30)
        self._log.close()
        return code


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_and_the_parent_keeps_them(postgres_url: str, tmp_path: Path) -> None:
    workers = Workers(postgres_url, tmp_path / "serve.log")
    try:
        assert wait_until(lambda: len(workers.worker_pids()) == 2, 30, 0.05), workers.log_path.read_text()
        first = workers.worker_pids()

        def both_answered() -> bool:
            workers.call_on_new_connections(5)
            return workers.answered_by() >= set(first.values())

        assert wait_until(both_answered, 60, 0), (workers.answered_by(), first)
        # The projector runs once: one projector, in worker 0.
        state = status(postgres_url)
        assert [(p["pid"], p["role"]) for p in state["projectors"]] == [(first[0], "owner")]

        os.kill(first[1], signal.SIGKILL)
        assert wait_until(lambda: workers.worker_pids()[1] != first[1], 30, 0.05), workers.log_path.read_text()
        replacement = workers.worker_pids()[1]
        assert any(
            line["level"] == "WARNING" and f"worker 1 (pid {first[1]}) exited" in line["message"]
            for line in workers.lines()
        )

        def replacement_answered() -> bool:
            workers.call_on_new_connections(5)
            return replacement in workers.answered_by()

        assert wait_until(replacement_answered, 60, 0)
    finally:
        code = workers.stop()
    assert code == 0, workers.log_path.read_text()[-3000:]
    stopped = [line["pid"] for line in workers.lines() if line["message"] == "stopped" and "pid" in line]
    assert sorted(stopped) == sorted([first[0], replacement])  # each drained and stopped
    assert not alive(first[0]) and not alive(replacement)


def test_workers_do_not_outlive_a_killed_parent(postgres_url: str, tmp_path: Path) -> None:
    """No orphan goes on serving on the shared port (and running a projector)
    after its parent is SIGKILLed: the kernel stops each worker."""
    workers = Workers(postgres_url, tmp_path / "serve.log")
    try:
        assert wait_until(lambda: len(workers.worker_pids()) == 2, 30, 0.05), workers.log_path.read_text()
        pids = list(workers.worker_pids().values())
        workers.proc.kill()
        workers.proc.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 30, 0.05), pids
    finally:
        workers.stop()


def test_workers_need_a_store_they_share() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "sessions", "serve", "--workers", "2", "--listen", f"127.0.0.1:{free_port()}",
         "--store", "memory://"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "memory://" in refused.stderr
