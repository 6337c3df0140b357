"""Shared helpers of the projection tests: a workload written through the
application's commands (with the progress sums it reported, counted here,
independently of the projector), and direct looks into the read model's table.

A plain module (not conftest.py) so that test modules can import it by a
name no other test folder uses."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from sessions.api.operations import renderer
from sessions.api.protos import session_pb2
from sessions.domain.commands import CloseSession, Heartbeat, OpenSession, ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.projection.row_tables import PostgresSessionRows
from sessions.projection.rows import SessionRows
from sessions.store.application import Caller, Outcome, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.operations import OperationRecord
from sessions.store.urls import parse_store_url
from tests.waiting import wait_until

T0 = datetime(2026, 3, 1, 12, 0, 0, 125000, tzinfo=UTC)
# A long TTL: the workload's manual clock never lets a session expire.
POLICY = Policy(
    session_ttl=timedelta(hours=6),
    heartbeat_grace=timedelta(hours=1),
    sync_interval=timedelta(0),
    full_sync_period=timedelta(days=1),
)
PRINCIPAL = "agent:projection-tests"

# (object type, change type) -> [successful, failed]
Totals = dict[tuple[int, int], list[int]]


def make_app(url: str, clock: ManualClock | None = None) -> SessionsApplication:
    return SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock or ManualClock(T0))


def head(app: SessionsApplication) -> int:
    return app.recorder.max_notification_id() or 0


@dataclass
class Workload:
    """Writes sessions' lives through the commands and keeps, per session,
    the sums of every progress report it made."""

    app: SessionsApplication
    seed: int = 7
    expected: dict[str, Totals] = field(default_factory=dict)
    open_ids: list[str] = field(default_factory=list)
    last: Outcome | None = None

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.clock: ManualClock = self.app.clock  # type: ignore[assignment]

    def reattach(self, app: SessionsApplication) -> None:
        """Go on writing through ``app`` (another instance on the same store,
        as after a restart), its clock continuing from this one's."""
        clock = ManualClock(self.clock())
        app.clock = clock
        self.app, self.clock = app, clock

    def _tick(self) -> None:
        self.clock.advance(seconds=1)

    def open(self, container: str, session_type: SessionType = SessionType.AD_SYNC) -> str:
        opened: list[str] = []
        render = renderer("OpenSession", PRINCIPAL)

        def capture(operation_id: str, now: datetime, result: Any) -> bytes:
            opened.append(result.session.id)
            return render(operation_id, now, result)

        self._tick()
        self.last = self.app.execute(OpenSession(container, "agent-1", session_type), Caller(PRINCIPAL), capture)
        session_id = opened[-1]
        self.expected.setdefault(session_id, {})
        self.open_ids.append(session_id)
        return session_id

    def _entries(self, session_id: str) -> list[ProgressEntry]:
        """A random report for ``session_id``, added to its expected sums."""
        entries = []
        totals = self.expected[session_id]
        object_types = self.random.sample(list(RelatedObjectType), self.random.randint(1, 3))
        for object_type in object_types:
            changes = []
            for change_type in self.random.sample(list(ChangeType), self.random.randint(1, 3)):
                ok, failed = self.random.randint(0, 1000), self.random.randint(0, 20)
                changes.append(ChangeCount(change_type, ok, failed))
                sums = totals.setdefault((object_type.value, change_type.value), [0, 0])
                sums[0] += ok
                sums[1] += failed
            entries.append(ProgressEntry(object_type, tuple(changes)))
        return entries

    def report(self, session_id: str) -> Outcome:
        entries = self._entries(session_id)
        self._tick()
        self.last = self.app.execute(
            ReportProgress(session_id, entries), Caller(PRINCIPAL), renderer("ReportSessionProgress", PRINCIPAL)
        )
        return self.last

    def heartbeat(self, session_id: str) -> Outcome:
        self._tick()
        self.last = self.app.execute(Heartbeat(session_id), Caller(PRINCIPAL), renderer("Heartbeat", PRINCIPAL))
        return self.last

    def close(self, session_id: str, failed: bool = False) -> Outcome:
        self._tick()
        self.last = self.app.execute(
            CloseSession(session_id, failed, "gave up" if failed else ""),
            Caller(PRINCIPAL),
            renderer("CloseSession", PRINCIPAL),
        )
        self.open_ids.remove(session_id)
        return self.last

    def run(self, events: int, containers: int = 8) -> None:
        """Write at least ``events`` events: sessions on ``containers``
        containers, interleaved, each reporting progress and sending
        heartbeats; about one in ten commands closes a session (and the next
        one on that container opens another)."""
        target = head(self.app) + events
        by_container: dict[str, str] = {}
        while head(self.app) < target:
            container = f"container-{self.random.randrange(containers)}"
            session_id = by_container.get(container)
            if session_id is None:
                by_container[container] = self.open(container)
                continue
            roll = self.random.random()
            if roll < 0.08:
                self.close(session_id, failed=roll < 0.02)
                del by_container[container]
            elif roll < 0.25:
                self.heartbeat(session_id)
            else:
                self.report(session_id)

    def bulk(self, sessions: int, rounds: int) -> None:
        """A faster way to a long, interleaved log: open ``sessions`` sessions
        through the command, then in each of ``rounds`` rounds let every
        session report progress (or, now and then, send a heartbeat) and save
        all of them plus an operation record in one write, so that the log
        alternates between the sessions and holds non-session streams; finally
        close every third session through the command."""
        session_ids = [self.open(f"bulk-container-{i}") for i in range(sessions)]
        loaded = [self.app.get_session(sid) for sid in session_ids]
        for round_number in range(rounds):
            now = self.clock.advance(seconds=1)
            for session in loaded:
                if self.random.random() < 0.1:
                    session.heartbeat(now=now, policy=POLICY, principal=PRINCIPAL)
                else:
                    session.report_progress(self._entries(session.id), now=now, policy=POLICY, principal=PRINCIPAL)
            record = OperationRecord(
                id=f"opbulk{round_number:014d}",
                method="Bulk",
                session_id="",
                payload=b"",
                principal=PRINCIPAL,
                idempotency_key="",
                timestamp=now,
            )
            self.app.save(*loaded, record)
        for session_id in session_ids[::3]:
            self.close(session_id)


def served_totals(served: bytes) -> Totals:
    """The progress totals in a row's stored SynchronizationSession."""
    message = session_pb2.SynchronizationSession.FromString(served)
    return {
        (entry.object_type, change.change_type): [change.successful, change.failed]
        for entry in message.progress_entries
        for change in entry.change_info
    }


def stored_versions(view: SessionRows) -> dict[str, int]:
    """session_id -> version, for every committed row of the read model."""
    if isinstance(view, PostgresSessionRows):
        with view.datastore.get_connection() as conn, conn.cursor() as curs:
            return versions_in(curs, view.table)
    with view.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        return versions_in(c, view.table)


def versions_in(cursor: Any, table: str) -> dict[str, int]:
    """session_id -> version, as ``cursor`` sees ``table`` (inside its transaction)."""
    if isinstance(cursor, psycopg.Cursor):
        cursor.execute(SQL("SELECT session_id, version FROM {}").format(Identifier(table)))
        return {r["session_id"]: r["version"] for r in cursor.fetchall()}
    cursor.execute(f"SELECT session_id, version FROM {table}")
    return {r[0]: r[1] for r in cursor.fetchall()}


def poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    return wait_until(predicate, timeout, interval)
