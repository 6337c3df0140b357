"""Shared helpers of the scale-out tests: `sessions project` and
`sessions serve --workers N` as real processes, what `sessions projections
status --json` says, the PostgreSQL session that holds a read model's
projector lock, and writes going on meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.projection.ownership import KEY_CLASS, lock_key
from sessions.projection.rows import NAME
from tests.projection.projection_support import Workload, head
from tests.projections_ops.ops_support import described, sessions_command
from tests.server_process import free_port, stop_process
from tests.waiting import wait_until


class ProjectProcess:
    """`python -m sessions project --no-deadlines` as a real process;
    ``prefix``: what runs it (``ip netns exec NAME``: in a network namespace;
    it execs the command, so the pid is the projector's)."""

    def __init__(self, store_url: str, log_path: Path, *args: str, prefix: Sequence[str] = ()):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "sessions", "project", "--no-deadlines", "--store", store_url, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # (if a test left it paused)
        code = stop_process(self.proc)
        self._log.close()
        return code


def status(store_url: str) -> dict[str, Any]:
    result = sessions_command("projections", "status", "--json", "--store", store_url)
    assert result.returncode == 0, described(result)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def roles(state: dict[str, Any]) -> dict[int, str]:
    """pid -> owner/standby, as status names them."""
    return {p["pid"]: p["role"] for p in state["projectors"]}


def lock_holder(store_url: str) -> int | None:
    """The backend pid of the session holding the read model's projector lock."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (KEY_CLASS, lock_key(NAME)),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate(store_url: str, backend_pid: int) -> None:
    """End a backend and return once it is gone (its locks released): the
    signal alone returns before the backend exits (PostgreSQL 14+ waits
    for the exit when given a timeout, and says whether it came)."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s, 10000)", (backend_pid,)).fetchone()[0]


AD_SYNC = 1


class Workers:
    def __init__(self, store_url: str, log_path: Path, *args: str, count: int = 2):
        """``args``: more flags of `serve`."""
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
                *args,
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


class Writes:
    """Events written by the test's application until stopped (a thread).
    Leaving the block fails the test if the writer died or wrote nothing:
    an "under writes" test must not pass with its writes dead."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self.rounds = 0  # rounds of writes completed
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.workload.run(20)
                self.rounds += 1
        except BaseException as e:  # noqa: BLE001 - raised again in __exit__
            self.error = e

    def __enter__(self) -> Writes:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        if exc_type is not None:
            return  # the block's own failure says more
        assert not self._thread.is_alive(), "the writer did not stop within 60 s"
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}") from self.error
        assert self.rounds > 0, "the writer completed no writes"


def wait_for_status(url: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        seen.append(status(url))
        return bool(predicate(seen[-1]))

    assert wait_until(reached, timeout, interval=0.2), f"status never reached the condition: {seen[-1:]}"
    return seen[-1]


def folded_to_head(url: str, app: Any) -> None:
    target = head(app)
    wait_for_status(url, lambda s: s["live"]["position"] >= target)


def assert_verified(url: str) -> None:
    result = sessions_command("projections", "verify", "--store", url)
    assert result.returncode == 0, described(result)
    assert "identical" in result.stdout
