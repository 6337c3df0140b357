"""Helpers of the projection operations tests: the `sessions` command as a
subprocess, direct SQL on a store (to corrupt, repair and compare read-model
tables), and gRPC traffic that records every answer while a rebuild runs."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sessions.api.protos import service_pb2, session_pb2
from sessions.projection.registry import Registry
from sessions.projection.rows import NAME
from sessions.store.application import SessionsApplication

AD_SYNC = 1


# --- the command line -------------------------------------------------------------------


def sessions_command(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m sessions ARGS` to its end; stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "sessions", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def differs_lines(stdout: str) -> list[str]:
    """The session ids `projections verify` names, in its order."""
    return [line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("DIFFERS ")]


# --- SQL on the application's own datastore -------------------------------------------------


def sql(app: SessionsApplication, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) in its own committed transaction."""
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    if app.settings.backend == "postgresql":
        with datastore.transaction(commit=True) as curs:
            curs.execute(statement.replace("?", "%s"), params)
            return [tuple(r.values()) for r in curs.fetchall()] if curs.description else []
    with datastore.transaction(commit=True) as c:
        c.execute(statement, params)
        return [tuple(r) for r in c.fetchall()]


def table_exists(app: SessionsApplication, table: str) -> bool:
    if app.settings.backend == "postgresql":
        rows = sql(app, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = ?", (table,))
    else:
        rows = sql(app, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return rows[0][0] == 1


def rows_of(app: SessionsApplication, table: str) -> dict[str, tuple[int, bytes]]:
    """session_id -> (version, the stored SynchronizationSession bytes)."""
    return {
        r[0]: (r[1], bytes(r[2]))
        for r in sql(app, f"SELECT session_id, version, session FROM {table}")
    }


def sessions_of(app: SessionsApplication, table: str) -> dict[str, bytes]:
    """session_id -> the bytes GetSession serves from ``table``."""
    return {sid: session for sid, (_, session) in rows_of(app, table).items()}


def live_table(app: SessionsApplication) -> str:
    return Registry.of(app).get(NAME).live_table


def stored_events(app: SessionsApplication) -> list[tuple[str, int, str, bytes]]:
    """Every event of the store in log order: (stream, version, topic, state)."""
    events = []
    position = 0
    while True:
        batch = app.recorder.select_notifications(start=position, limit=2000, inclusive_of_start=False)
        if not batch:
            return events
        events.extend((str(n.originator_id), n.originator_version, n.topic, bytes(n.state)) for n in batch)
        position = batch[-1].id


# --- gRPC ----------------------------------------------------------------------------------


def unpack(operation: Any, message_type: Any) -> Any:
    message = message_type()
    assert operation.response.Unpack(message), operation.response.type_url
    return message


def progress_total(session: session_pb2.SynchronizationSession) -> int:
    """Everything a session's reports have counted so far: it only grows."""
    return sum(c.successful + c.failed for e in session.progress_entries for c in e.change_info)


@dataclass
class Read:
    at: float
    session_id: str
    ok: bool
    detail: str = ""


@dataclass
class Traffic:
    """Writers and readers on a server, each in its own thread, recording
    every call. Writes: progress reports and heartbeats on open sessions, and
    now and then a session opened on a new container; each write is followed
    by a GetSession that must show it (read-your-writes). Reads: GetSession
    on known sessions, each of which must answer, and never with less
    progress than the same session showed before."""

    stub: Any
    open_ids: list[str]
    read_ids: list[str]
    writes: int = 0
    reads: list[Read] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, name="traffic-write", daemon=True),
            threading.Thread(target=self._read, name="traffic-read", daemon=True),
        ]

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} did not stop"

    def _write(self) -> None:
        rnd = random.Random(11)
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 10 == 0:
                    operation = self.stub.OpenSession(
                        service_pb2.OpenSessionRequest(
                            subject_container_id=f"traffic-{n}", agent_id="agent-1", session_type=AD_SYNC
                        )
                    )
                    opened = unpack(operation, service_pb2.OpenSessionResponse)
                    if opened.result != service_pb2.SUCCESS:
                        self.failures.append(f"open on traffic-{n}: {opened.result}")
                        continue
                    expected = opened.opened_session
                    session_id = expected.session_id
                    self.open_ids.append(session_id)
                elif n % 3 == 0:
                    session_id = rnd.choice(self.open_ids)
                    self.stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id))
                    expected = None
                else:
                    session_id = rnd.choice(self.open_ids)
                    operation = self.stub.ReportSessionProgress(
                        service_pb2.ReportSessionProgressRequest(
                            session_id=session_id,
                            progress_entries=[
                                session_pb2.ProgressEntry(
                                    object_type=1 + n % 3,
                                    change_info=[session_pb2.ChangeInfo(change_type=1 + n % 3, successful=n, failed=1)],
                                )
                            ],
                        )
                    )
                    expected = unpack(operation, session_pb2.SynchronizationSession)
                got = self.stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session
                if expected is not None and got != expected:
                    self.failures.append(f"GetSession({session_id}) after a write did not show it")
                self.writes += 1
            except grpc.RpcError as e:
                self.failures.append(f"write {n}: {e.code().name} {e.details()}")
            except Exception as e:  # noqa: BLE001 - recorded, asserted on by the test
                self.failures.append(f"write {n}: {e!r}")

    def _read(self) -> None:
        rnd = random.Random(12)
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            session_id = rnd.choice(self.read_ids)
            try:
                got = self.stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session
            except grpc.RpcError as e:
                self.reads.append(Read(time.monotonic(), session_id, False, f"{e.code().name} {e.details()}"))
                continue
            total = progress_total(got)
            if got.session_id != session_id or total < seen.get(session_id, 0):
                self.reads.append(
                    Read(time.monotonic(), session_id, False, f"went back: {total} < {seen.get(session_id)}")
                )
                continue
            seen[session_id] = total
            self.reads.append(Read(time.monotonic(), session_id, True))

    def reads_between(self, start: float, end: float) -> list[Read]:
        return [r for r in list(self.reads) if start <= r.at <= end]
