"""Helpers of the audit tests: a session driven through the API with what
GetSession showed at each moment, the CLI as a subprocess, a store built
through the application's commands, and direct SQL on the events table (the
tampering an attacker with database access could do)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from sessions.api.operations import renderer
from sessions.api.protos import operation_pb2, service_pb2, session_pb2
from sessions.domain.commands import CloseSession, Heartbeat, OpenSession, ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.store.application import Caller, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url
from tests.api.test_lifecycle import entry, get, open_session

USER, GROUP, MEMBERSHIP = 1, 2, 3
CREATE, UPDATE, DELETE = 1, 2, 3

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
BEARER = ("authorization", "Bearer x")
TOKEN = "token:" + hashlib.sha256(b"x").hexdigest()[:16]
ANONYMOUS = "anonymous"
SYSTEM = "system:deadline"


# --- a session driven through the API ------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One recorded event: what the call was, and what GetSession showed right after."""

    event_type: str
    principal: str
    idempotency_key: str
    at: datetime
    shown: session_pb2.SynchronizationSession


@dataclass(frozen=True)
class Seen:
    """What GetSession showed at a moment (after a call, or between calls)."""

    at: datetime
    shown: session_pb2.SynchronizationSession


@dataclass
class Driven:
    session_id: str
    steps: list[Step] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def version_at(self, moment: datetime) -> int:
        return sum(1 for s in self.steps if s.at <= moment)


def drive(server: Any, clock: ManualClock) -> Driven:
    """Open, report twice (and retry one report), heartbeat, go quiet past the
    grace, get stalled (app.stall_session), heartbeat, close; recording after
    each call and at moments between calls what GetSession showed.
    Policy: the default (ttl 600 s, heartbeat grace 120 s)."""
    stub = server.sessions
    driven: Driven

    def look() -> session_pb2.SynchronizationSession:
        shown = get(stub, driven.session_id)
        driven.seen.append(Seen(clock(), shown))
        return shown

    def step(event_type: str, principal: str, key: str = "") -> None:
        driven.steps.append(Step(event_type, principal, key, clock(), look()))

    _, opened = open_session(stub, "container-h", **{"idempotency-key": "open-1"})
    driven = Driven(opened.opened_session.session_id)
    sid = driven.session_id
    step("SessionOpened", ANONYMOUS, "open-1")
    assert driven.steps[-1].shown == opened.opened_session

    clock.advance(7)
    look()
    clock.advance(3)
    first_report = service_pb2.ReportSessionProgressRequest(
        session_id=sid, progress_entries=[entry(USER, (CREATE, 5, 1))]
    )
    first = stub.ReportSessionProgress(first_report, metadata=[BEARER, ("idempotency-key", "report-1")])
    step("ProgressReported", TOKEN, "report-1")

    clock.advance(10)
    stub.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=sid,
            progress_entries=[entry(GROUP, (UPDATE, 2, 0)), entry(USER, (DELETE, 1, 1), (CREATE, 2, 0))],
        )
    )
    step("ProgressReported", ANONYMOUS)

    clock.advance(1)
    # A retry with the first report's key answers as the first time and records nothing.
    retry = stub.ReportSessionProgress(first_report, metadata=[BEARER, ("idempotency-key", "report-1")])
    assert retry == first
    look()

    clock.advance(9)
    stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=sid), metadata=[BEARER])
    step("HeartbeatReceived", TOKEN)

    clock.advance(60)
    look()
    clock.advance(61)  # 121 s since the agent was last seen: past the 120 s grace
    assert look().status == session_pb2.OPENED  # a stall is recorded, never guessed at read time
    clock.advance(1)
    position = server.server.app.stall_session(sid)
    assert position, "the stall was not recorded"
    assert server.server.projector.wait_for(position, 5)
    step("SessionStalled", SYSTEM)
    assert driven.steps[-1].shown.status == session_pb2.PENDING

    clock.advance(5)
    stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=sid), metadata=[("idempotency-key", "beat-2")])
    step("HeartbeatReceived", ANONYMOUS, "beat-2")
    assert driven.steps[-1].shown.status == session_pb2.OPENED

    clock.advance(5)
    stub.CloseSession(
        service_pb2.CloseSessionRequest(session_id=sid),
        metadata=[BEARER, ("idempotency-key", "close-1")],
    )
    step("SessionCompleted", TOKEN, "close-1")
    assert driven.steps[-1].shown.status == session_pb2.COMPLETED

    clock.advance(30)
    look()
    return driven


# --- the CLI ---------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli_many([list(args)], timeout=timeout)[0]


def run_cli_many(commands: Sequence[Sequence[str]], timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
    """Run several `python -m sessions ...` at once (each is ~0.7 s of imports)."""
    procs = [
        (
            list(args),
            subprocess.Popen(
                [sys.executable, "-m", "sessions", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "COLUMNS": "400"},  # rich would fit tables into 80
            ),
        )
        for args in commands
    ]
    results = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


# --- a store built through the application's commands ---------------------------------

POLICY = Policy(
    session_ttl=timedelta(minutes=10),
    heartbeat_grace=timedelta(minutes=2),
    sync_interval=timedelta(minutes=1),
    full_sync_period=timedelta(days=1),
)
FAIL_REASON = "LDAP недоступен — «timeout»"  # non-ASCII: the canonical JSON keeps it as is


def report(*entries: tuple[RelatedObjectType, tuple[tuple[ChangeType, int, int], ...]]) -> list[ProgressEntry]:
    return [
        ProgressEntry(object_type, tuple(ChangeCount(c, s, f) for c, s, f in changes))
        for object_type, changes in entries
    ]


@dataclass
class Built:
    app: SessionsApplication
    clock: ManualClock
    closed: str = ""  # COMPLETED: open, report, report, heartbeat, complete (5 events)
    failed: str = ""  # FAILED: open, report, fail (3 events)
    expired: str = ""  # EXPIRED: open, expire (2 events)
    stalled: str = ""  # still open, PENDING: open, report, stall (3 events)
    running: str = ""  # still open: open (a DELTA after `closed`), report (2 events)
    operation: str = ""  # an operation record's stream (1 event)
    # (stream, version) -> (event class name, link) as the domain computed them,
    # captured from the aggregates' pending events on their way into the store.
    domain_links: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)

    @property
    def sessions(self) -> list[str]:
        return [self.closed, self.failed, self.expired, self.stalled, self.running]


def build_store(store_url: str) -> Built:
    """A store with sessions in every state, written by the application's
    commands exactly as the servicers call them."""
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
    built = Built(app, clock)
    record = app._record  # every save goes through it, the commands' included

    def capturing_record(processing_event: Any) -> Any:
        for event in processing_event.events:
            key = (str(event.originator_id), event.originator_version)
            built.domain_links[key] = (type(event).__name__, event.link)
        return record(processing_event)

    app._record = capturing_record  # type: ignore[method-assign]

    def call(method: str, principal: str = ANONYMOUS, key: str = "") -> tuple[Caller, Any]:
        return Caller(principal, key), renderer(method, principal)

    def open_(container: str, principal: str = ANONYMOUS, key: str = "") -> str:
        command = OpenSession(container, "agent-ü", SessionType.AD_SYNC)
        outcome = app.execute(command, *call("OpenSession", principal, key))
        answer = service_pb2.OpenSessionResponse()
        assert operation_pb2.Operation.FromString(outcome.payload).response.Unpack(answer)
        assert answer.result == service_pb2.SUCCESS, answer
        built.operation = built.operation or outcome.operation_id
        return answer.opened_session.session_id

    users = report((RelatedObjectType.USER, ((ChangeType.CREATE, 3, 1),)))
    groups = report(
        (RelatedObjectType.GROUP, ((ChangeType.UPDATE, 2, 0),)),
        (RelatedObjectType.MEMBERSHIP, ((ChangeType.DELETE, 7, 0), (ChangeType.CREATE, 2**63 - 1, 0))),
    )

    built.expired = open_("container-c")
    clock.advance(601)
    assert app.expire_session(built.expired)

    built.closed = open_("container-a", TOKEN, "open-a")
    clock.advance(1)
    app.execute(ReportProgress(built.closed, users), *call("ReportSessionProgress", TOKEN, "r-1"))
    clock.advance(1)
    app.execute(ReportProgress(built.closed, groups), *call("ReportSessionProgress"))
    clock.advance(1)
    app.execute(Heartbeat(built.closed), *call("Heartbeat", TOKEN))
    clock.advance(1)
    app.execute(CloseSession(built.closed, False, ""), *call("CloseSession", TOKEN, "close-a"))

    built.failed = open_("container-b")
    clock.advance(1)
    app.execute(ReportProgress(built.failed, users), *call("ReportSessionProgress"))
    clock.advance(1)
    app.execute(CloseSession(built.failed, True, FAIL_REASON), *call("CloseSession"))

    clock.advance(61)  # past the sync interval after `closed`
    built.running = open_("container-a")
    app.execute(ReportProgress(built.running, users), *call("ReportSessionProgress"))

    built.stalled = open_("container-d")
    clock.advance(1)
    app.execute(ReportProgress(built.stalled, groups), *call("ReportSessionProgress"))
    clock.advance(121)
    assert app.stall_session(built.stalled)
    return built


# --- tampering with the stored rows ----------------------------------------------------


class EventsTable:
    """Direct access to the events table, behind the application's back."""

    def __init__(self, store_url: str):
        self.settings = parse_store_url(store_url)
        self.store_url = store_url
        self.backend = self.settings.backend
        self.table = "stored_events" if self.backend == "sqlite" else "sessions_events"

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | int:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.settings.env["SQLITE_DBNAME"], timeout=10)
            try:
                cursor = conn.execute(sql, params)
                rows = cursor.fetchall() if sql.lstrip().upper().startswith("SELECT") else cursor.rowcount
                conn.commit()
                return rows
            finally:
                conn.close()
        with psycopg.connect(self.store_url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if sql.lstrip().upper().startswith("SELECT") else cursor.rowcount

    def state(self, stream: str, version: int) -> bytes:
        rows = self._execute(
            f"SELECT state FROM {self.table} WHERE originator_id = ? AND originator_version = ?",
            (stream, version),
        )
        assert isinstance(rows, list) and len(rows) == 1, rows
        return bytes(rows[0][0])

    def topic(self, stream: str, version: int) -> str:
        rows = self._execute(
            f"SELECT topic FROM {self.table} WHERE originator_id = ? AND originator_version = ?",
            (stream, version),
        )
        assert isinstance(rows, list) and len(rows) == 1, rows
        return str(rows[0][0])

    def set_state(self, stream: str, version: int, state: bytes) -> None:
        count = self._execute(
            f"UPDATE {self.table} SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (state, stream, version),
        )
        assert count == 1, count

    def delete(self, stream: str, *versions: int) -> None:
        for version in versions:
            count = self._execute(
                f"DELETE FROM {self.table} WHERE originator_id = ? AND originator_version = ?",
                (stream, version),
            )
            assert count == 1, (stream, version, count)

    def versions(self, stream: str) -> list[int]:
        rows = self._execute(
            f"SELECT originator_version FROM {self.table} WHERE originator_id = ? ORDER BY originator_version",
            (stream,),
        )
        assert isinstance(rows, list)
        return [r[0] for r in rows]
