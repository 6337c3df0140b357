"""`sessions serve --workers 2` as real processes on PostgreSQL: calls reach
both workers (each access line names its worker's pid), a killed worker is
replaced, the projector runs once, and SIGTERM drains and stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scaleout.scaleout_support import Workers, alive, status
from tests.server_process import free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

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
