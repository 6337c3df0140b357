"""Exactly once: a view row and the tracking position commit together, so a
crash anywhere leaves the read model at a batch boundary, and folding on from
there gives the same read model as a fresh fold of the log.

Two kinds of crash: an exception inside the batch's transaction after the
rows and the tracking position were written (in process), and SIGKILL of a
`sessions project` process at arbitrary moments of its catch-up."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from projection_support import (
    Workload,
    head,
    make_app,
    poll,
    served_totals,
    stored_versions,
    versions_in,
)

from sessions.projection.fold import SESSION_TOPICS
from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from sessions.projection.rows import SessionRows
from sessions.projection.verify import differences
from sessions.store.application import SessionsApplication
from sessions.wire import session_bytes


class Crash(Exception):
    """Stands for the process dying between the batch's writes and its commit."""


@pytest.fixture
def app(store_url: str) -> Iterator[SessionsApplication]:
    application = make_app(store_url)
    yield application
    application.close()


def assert_read_model_matches_log(
    app: SessionsApplication, view: SessionRows, workload: Workload
) -> None:
    assert list(differences(app, view)) == []
    assert view.position() == head(app)
    versions = stored_versions(view)
    assert versions == {sid: app.get_session(sid).version for sid in workload.expected}
    for session_id, expected in workload.expected.items():
        row = view.get(session_id)
        assert row is not None
        assert served_totals(row.session) == expected, session_id


# --- a crash inside the batch's transaction ---------------------------------------


@pytest.mark.parametrize("crash_at", ["first", "middle", "last"])
def test_crash_inside_a_batch_rolls_back_rows_and_position(
    app: SessionsApplication, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    workload = Workload(app)
    workload.run(300, containers=6)
    log_head = head(app)
    view = open_rows(app)
    batch_size = 25
    projector = Projector(app, view, batch_size=batch_size)
    # The projector reads only session events, in batches of that many.
    session_events = len(
        app.recorder.select_notifications(start=0, limit=log_head, topics=sorted(SESSION_TOPICS))
    )
    batches = math.ceil(session_events / batch_size)
    healthy_batches = {"first": 0, "middle": batches // 2, "last": batches - 1}[crash_at]
    for _ in range(healthy_batches):
        assert projector.run_batch() > 0

    position_before = view.position()
    versions_before = stored_versions(view)
    assert position_before == projector.position

    # The view's own save runs: it upserts the rows and inserts the tracking
    # position, and then, still inside its transaction, the "crash" happens.
    seen_inside: list[dict[str, int]] = []
    insert_tracking = view._insert_tracking  # type: ignore[attr-defined]

    def insert_tracking_then_crash(cursor, tracking):  # type: ignore[no-untyped-def]
        insert_tracking(cursor, tracking)
        seen_inside.append(versions_in(cursor, view.table))
        raise Crash

    monkeypatch.setattr(view, "_insert_tracking", insert_tracking_then_crash)
    with pytest.raises(Crash):
        projector.run_batch()

    # The batch's rows were written inside the transaction ...
    assert len(seen_inside) == 1
    assert seen_inside[0] != versions_before
    # ... and rolled back with the position, which neither the table nor the
    # projector's memory moved past.
    assert view.position() == position_before
    assert projector.position == position_before
    assert stored_versions(view) == versions_before

    monkeypatch.undo()  # a healthy recorder again
    assert projector.catch_up() == log_head - position_before
    assert projector.position == log_head
    assert_read_model_matches_log(app, view, workload)


def test_a_new_projector_after_a_crash_resumes_at_the_last_commit(
    app: SessionsApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restart case: the failed batch is redone by a projector that knows
    only what the store says (the tracking position and the stored rows)."""
    workload = Workload(app)
    workload.run(200, containers=4)
    view = open_rows(app)
    crashing = Projector(app, view, batch_size=20)
    for _ in range(3):
        crashing.run_batch()
    committed = crashing.position
    assert 0 < committed < head(app)
    insert_tracking = view._insert_tracking  # type: ignore[attr-defined]

    def insert_tracking_then_crash(cursor, tracking):  # type: ignore[no-untyped-def]
        insert_tracking(cursor, tracking)
        raise Crash

    monkeypatch.setattr(view, "_insert_tracking", insert_tracking_then_crash)
    with pytest.raises(Crash):
        crashing.run_batch()
    monkeypatch.undo()

    restarted = Projector(app, open_rows(app), batch_size=20)
    assert restarted.position == committed
    assert restarted.catch_up() == head(app) - committed
    assert_read_model_matches_log(app, view, workload)


# --- SIGKILL of a projector process ----------------------------------------------------


def start_projector(store_url: str, workdir: Path, run: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sessions", "project", "--store", store_url]
    # No deadline worker: the log's times are the test clock's, long past,
    # and only the projector is under test.
    command += ["--batch-size", "50", "--no-deadlines"]
    with (workdir / f"project-{run}.log").open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SESSIONS_LOG_LEVEL": "WARNING"},
        )


def kill_when_past(
    process: subprocess.Popen[bytes], view: SessionRows, position: int, workdir: Path, run: int
) -> int:
    """SIGKILL ``process`` as soon as its committed position passes ``position``;
    return the committed position after the kill."""
    try:
        passed = poll(lambda: view.position() > position or process.poll() is not None, 60, 0.001)
        assert process.poll() is None, (workdir / f"project-{run}.log").read_text()
        assert passed, f"the projector did not pass {position} within 60s"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    return view.position()


@pytest.mark.slow
def test_killed_projector_process_resumes_exactly_once(
    store_url: str, tmp_path: Path
) -> None:
    app = make_app(store_url)
    try:
        workload = Workload(app)
        workload.bulk(sessions=100, rounds=27)  # about 3200 events
        log_head = head(app)
        assert log_head >= 3000
        view = open_rows(app)
        assert view.position() == 0

        positions = []
        for run, fraction in enumerate((0.3, 0.6)):
            process = start_projector(store_url, tmp_path, run)
            positions.append(kill_when_past(process, view, int(log_head * fraction), tmp_path, run))
        first, second = positions
        # Each kill landed before the end of the log.
        assert log_head * 0.3 < first < second < log_head, positions
        # What is committed is a fold of the log up to that point: each row
        # equals a fresh fold of its session's events up to the row's version.
        for session_id, version in stored_versions(view).items():
            row = view.get(session_id)
            assert row is not None
            assert row.session == session_bytes(app.get_session(session_id, version)), session_id

        finished = subprocess.run(
            [sys.executable, "-m", "sessions", "project", "--store", store_url, "--once"],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert finished.returncode == 0, finished.stderr.decode()
        assert_read_model_matches_log(app, view, workload)
    finally:
        app.close()
