"""Shared helpers of the scale-out tests: `sessions project` as a real
process, what `sessions projections status --json` says, and the PostgreSQL
session that holds a read model's projector lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from sessions.projection.ownership import KEY_CLASS, lock_key
from sessions.projection.rows import NAME
from tests.projections_ops.ops_support import described, sessions_command
from tests.server_process import stop_process


class ProjectProcess:
    """`python -m sessions project --no-deadlines` as a real process."""

    def __init__(self, store_url: str, log_path: Path, *args: str):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessions", "project", "--no-deadlines", "--store", store_url, *args],
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
