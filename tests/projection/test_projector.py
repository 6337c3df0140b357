"""The projector's life: tailing the log, waiting for positions, skipping
streams that are not sessions, and resuming after a restart from what the
store holds (the tracking position and the stored rows), not by replaying."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from projection_support import (
    PRINCIPAL,
    T0,
    Workload,
    head,
    make_app,
    poll,
    served_totals,
    stored_versions,
)

from sessions.domain.enums import SessionType
from sessions.domain.schedule import SyncSchedule
from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from sessions.projection.rows import SessionRows
from sessions.projection.verify import differences
from sessions.store.application import SessionsApplication
from sessions.store.operations import OperationRecord


@pytest.fixture
def apps(store_url: str) -> Iterator[Callable[[], SessionsApplication]]:
    """Applications on the test's store (each like its own process); closed
    after the test, after the projectors started on them have stopped."""
    opened: list[SessionsApplication] = []

    def new() -> SessionsApplication:
        opened.append(make_app(store_url))
        return opened[-1]

    yield new
    for application in opened:
        application.close()


@pytest.fixture
def started() -> Iterator[Callable[[Projector], Projector]]:
    running: list[Projector] = []

    def start(projector: Projector) -> Projector:
        projector.start()
        running.append(projector)
        return projector

    yield start
    for projector in running:
        projector.stop()


def spy_on_saves(monkeypatch: pytest.MonkeyPatch, view: SessionRows) -> list[tuple[list[str], int]]:
    """Record each save of ``view``: (session ids of the rows, tracking position)."""
    saves: list[tuple[list[str], int]] = []
    save = view.save

    def recording_save(rows, tracking, parked=(), **kwargs):  # type: ignore[no-untyped-def]
        save(rows, tracking, parked)
        saves.append(([r.session_id for r in rows], tracking.notification_id))

    monkeypatch.setattr(view, "save", recording_save)
    return saves


def spy_on_reads(monkeypatch: pytest.MonkeyPatch, app: SessionsApplication) -> list[int]:
    """Record the ``start`` of each select_notifications on ``app``'s recorder."""
    starts: list[int] = []
    select = app.recorder.select_notifications

    def recording_select(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        starts.append(kwargs["start"] if "start" in kwargs else args[0])
        return select(*args, **kwargs)

    monkeypatch.setattr(app.recorder, "select_notifications", recording_select)
    return starts


def assert_matches_log(app: SessionsApplication, view: SessionRows, workload: Workload) -> None:
    assert list(differences(app, view)) == []
    assert stored_versions(view) == {sid: app.get_session(sid).version for sid in workload.expected}
    for session_id, expected in workload.expected.items():
        row = view.get(session_id)
        assert row is not None and served_totals(row.session) == expected, session_id


# --- tailing ----------------------------------------------------------------------------


def test_tailing_projector_folds_writes_made_after_it_started(apps, started) -> None:  # type: ignore[no-untyped-def]
    app = apps()
    workload = Workload(app)
    workload.run(40, containers=3)
    view = open_rows(app)
    projector = started(Projector(app, view, batch_size=16))
    assert projector.wait_for(head(app), timeout=10) is True

    session_id = workload.open("container-after-start")
    for _ in range(5):
        outcome = workload.report(session_id)
    # Read-your-writes: once wait_for says so, the row holds the write.
    assert projector.wait_for(outcome.position, timeout=10) is True
    assert projector.position >= outcome.position
    row = view.get(session_id)
    assert row is not None
    assert served_totals(row.session) == workload.expected[session_id]
    assert stored_versions(view)[session_id] == app.get_session(session_id).version

    # A write by another application on the store (as from another process)
    # reaches the view without anyone waking the projector.
    other = Workload(apps(), seed=11)
    other_id = other.open("container-of-another-process")
    other.report(other_id)
    assert poll(lambda: view.position() >= head(app), timeout=10)
    row = view.get(other_id)
    assert row is not None and served_totals(row.session) == other.expected[other_id]
    assert list(differences(app, view)) == []
    assert projector.error is None


def test_wait_for_wakes_the_projector_instead_of_waiting_for_its_poll(apps, started) -> None:  # type: ignore[no-untyped-def]
    app = apps()
    workload = Workload(app)
    projector = started(Projector(app, open_rows(app), poll_interval=60))
    session_id = workload.open("container-1")
    outcome = workload.report(session_id)
    began = time.monotonic()
    assert projector.wait_for(outcome.position, timeout=10) is True
    assert time.monotonic() - began < 10  # not the 60 s poll interval


def test_wait_for_a_position_beyond_the_head_times_out(apps, started) -> None:  # type: ignore[no-untyped-def]
    app = apps()
    workload = Workload(app)
    workload.run(20, containers=2)
    projector = started(Projector(app, open_rows(app)))
    assert projector.wait_for(head(app), timeout=10) is True
    began = time.monotonic()
    assert projector.wait_for(head(app) + 1, timeout=0.3) is False
    waited = time.monotonic() - began
    assert 0.25 <= waited < 5, waited
    # The projector stopped: waiting returns at once, and says False.
    projector.stop()
    began = time.monotonic()
    assert projector.wait_for(head(app) + 1, timeout=5) is False
    assert time.monotonic() - began < 1


@pytest.mark.postgres
def test_postgres_notify_wakes_a_projector_in_another_process(postgres_url: str) -> None:
    """With a 60 s poll, only the NOTIFY of a write made elsewhere can bring
    the projector to it in time."""
    app, writer = make_app(postgres_url), make_app(postgres_url)
    view = open_rows(app)
    projector = Projector(app, view, poll_interval=60)
    try:
        projector.start()
        channel = app.recorder.channel_name  # type: ignore[attr-defined]

        def listening() -> bool:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = %s",
                    (f'LISTEN "{channel}"',),
                ).fetchone()
                return bool(row and row[0])

        assert poll(listening, timeout=10, interval=0.05)
        workload = Workload(writer)
        session_id = workload.open("container-1")
        assert poll(lambda: view.get(session_id) is not None, timeout=10)
        assert projector.error is None
    finally:
        projector.stop()
        app.close()
        writer.close()


def test_tailing_loop_redoes_a_failed_batch(apps, started, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = apps()
    workload = Workload(app)
    workload.run(60, containers=3)
    view = open_rows(app)
    failures: list[BaseException] = []
    insert_tracking = view._insert_tracking  # type: ignore[attr-defined]

    def fail_once(cursor, tracking):  # type: ignore[no-untyped-def]
        insert_tracking(cursor, tracking)
        if not failures:
            failures.append(RuntimeError("lost the connection before commit"))
            raise failures[0]

    monkeypatch.setattr(view, "_insert_tracking", fail_once)
    projector = started(Projector(app, view, batch_size=16))
    assert projector.wait_for(head(app), timeout=10) is True
    assert projector.error is failures[0]
    assert view.position() == head(app)
    assert_matches_log(app, view, workload)


def test_projector_overtaken_in_the_store_continues_from_the_stored_position(apps, started) -> None:  # type: ignore[no-untyped-def]
    """An earlier instance still finishing moved the tracking position past
    the one this projector read at its start: its first batch fails the
    tracking insert, and it goes on from the stored position."""
    app = apps()
    workload = Workload(app)
    workload.run(60, containers=3)
    view = open_rows(app)
    late = Projector(app, view, batch_size=16)  # read its position: 0
    Projector(app, open_rows(app), batch_size=16).catch_up()  # the other instance
    started(late)
    session_id = workload.open("container-late")
    outcome = workload.report(session_id)
    assert late.wait_for(outcome.position, timeout=10) is True
    assert late.error is not None  # it did fail once, on the stale batch
    assert view.position() == head(app)
    assert_matches_log(app, view, workload)


def test_projector_whose_commit_landed_but_raised_does_not_fold_twice(apps, started, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The commit's answer is lost (the batch did commit, save raised): the
    projector must neither fold those events again nor stall on them."""
    app = apps()
    workload = Workload(app)
    workload.run(60, containers=3)
    view = open_rows(app)
    lost: list[int] = []
    save = view.save

    def commit_then_raise(rows, tracking, parked=(), **kwargs):  # type: ignore[no-untyped-def]
        save(rows, tracking, parked, **kwargs)
        if not lost:
            lost.append(tracking.notification_id)
            raise ConnectionError("server closed the connection after COMMIT")

    monkeypatch.setattr(view, "save", commit_then_raise)
    projector = started(Projector(app, view, batch_size=16))
    assert projector.wait_for(head(app), timeout=10) is True
    assert len(lost) == 1 and 0 < lost[0] < head(app)
    assert isinstance(projector.error, ConnectionError)
    assert view.position() == head(app)
    assert_matches_log(app, view, workload)


# --- streams that are not sessions ---------------------------------------------------------


def write_non_session_events(app: SessionsApplication, count: int, tag: str) -> None:
    for i in range(count):
        now = T0 + timedelta(seconds=i)
        app.save(
            SyncSchedule.start(f"{tag}-container-{i}", SessionType.LDAP_SYNC, now=now, principal=PRINCIPAL),
            OperationRecord(
                id=f"op{tag}{i:012d}",
                method="Test",
                session_id="",
                payload=b"answer",
                principal=PRINCIPAL,
                idempotency_key="",
                timestamp=now,
            ),
        )


def test_non_session_streams_advance_the_position_without_rows(apps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = apps()
    write_non_session_events(app, 15, "a")  # 30 events
    view = open_rows(app)
    saves = spy_on_saves(monkeypatch, view)
    projector = Projector(app, view, batch_size=8)
    assert projector.catch_up() == 30
    assert view.position() == projector.position == head(app) == 30
    assert stored_versions(view) == {}
    # It reads only session events: none here, so one save moves the position.
    assert saves == [([], 30)]

    # Among sessions: only the sessions' events touch rows.
    workload = Workload(app)
    session_id = workload.open("container-1")
    workload.report(session_id)
    write_non_session_events(app, 10, "b")
    saves.clear()
    projector.catch_up()
    assert view.position() == head(app)
    touched = {sid for rows, _ in saves for sid in rows}
    assert touched == {session_id}
    assert stored_versions(view) == {session_id: app.get_session(session_id).version}
    versions = stored_versions(view)
    write_non_session_events(app, 10, "c")
    saves.clear()
    assert projector.catch_up() == 20
    assert all(rows == [] for rows, _ in saves) and saves[-1][1] == head(app)
    assert stored_versions(view) == versions


# --- restarts ---------------------------------------------------------------------------


def test_restarted_projector_resumes_from_its_tracking_position(apps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    first_app = apps()
    workload = Workload(first_app)
    workload.run(150, containers=4)
    first = Projector(first_app, open_rows(first_app), batch_size=40)
    first.catch_up()
    stopped_at = head(first_app)
    assert first.position == stopped_at
    rows_before = stored_versions(first.table)
    first_app.close()

    # The restart: a new application, a new view, a new projector.
    app = apps()
    workload.reattach(app)
    view = open_rows(app)
    reads = spy_on_reads(monkeypatch, app)
    saves = spy_on_saves(monkeypatch, view)
    projector = Projector(app, view, batch_size=40)
    assert projector.position == stopped_at
    assert projector.catch_up() == 0
    assert saves == []
    assert all(start == stopped_at for start in reads)  # nothing before its position
    assert stored_versions(view) == rows_before

    # Progress reported after the restart lands on the stored state: the
    # projector reads only what came after the restart, and yet the totals
    # include what was reported before it.
    touched = set(workload.open_ids[:2])
    assert len(touched) == 2
    for session_id in sorted(touched):
        workload.report(session_id)
        workload.heartbeat(session_id)
        workload.report(session_id)
    added = head(app) - stopped_at
    reads.clear()
    assert projector.catch_up() == added
    assert all(start >= stopped_at for start in reads), reads
    assert {sid for rows, _ in saves for sid in rows} == touched
    after = stored_versions(view)
    for session_id, version in rows_before.items():
        if session_id not in touched:
            assert after[session_id] == version
    assert view.position() == head(app)
    assert_matches_log(app, view, workload)
