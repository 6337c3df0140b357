"""Projector ownership, in one process on PostgreSQL: one owner at a time,
and the fence that keeps a former owner from committing a batch once a
standby took over (see projection.ownership)."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from sessions.projection.ownership import NotOwner, PostgresOwnership
from sessions.projection.read_model import ReadModel
from tests.projection.projection_support import Workload, head, make_app, poll
from tests.scaleout.scaleout_support import terminate

pytestmark = pytest.mark.postgres


def lock_backend(read_model: ReadModel) -> int:
    ownership = read_model.projector.ownership  # type: ignore[union-attr]
    return int(ownership._conn.info.backend_pid)  # type: ignore[union-attr]


def test_one_owner_folds_and_a_standby_takes_over_when_its_connection_ends(postgres_url: str) -> None:
    app_a, app_b = make_app(postgres_url), make_app(postgres_url)
    a, b = ReadModel(app_a), ReadModel(app_b)
    try:
        Workload(app_a).run(100)
        assert a.projector.take_ownership()  # type: ignore[union-attr]
        assert not b.projector.take_ownership()  # type: ignore[union-attr]
        assert b.projector.catch_up() == 0  # type: ignore[union-attr]  # a standby folds nothing
        assert a.projector.catch_up() > 0  # type: ignore[union-attr]
        assert a.projector.table.position() == head(app_a)  # type: ignore[union-attr]

        terminate(postgres_url, lock_backend(a))
        assert b.projector.take_ownership()  # type: ignore[union-attr]
        Workload(app_b, seed=8).run(100)
        before = b.projector.table.position()  # type: ignore[union-attr]
        # A has not noticed yet: its next batch finds B's generation and
        # writes nothing.
        assert a.projector.ownership.held  # type: ignore[union-attr]
        with pytest.raises(NotOwner):
            a.projector.run_batch()  # type: ignore[union-attr]
        assert b.projector.table.position() == before  # type: ignore[union-attr]
        assert b.projector.catch_up() > 0  # type: ignore[union-attr]
        assert b.projector.table.position() == head(app_b)  # type: ignore[union-attr]
    finally:
        a.stop()
        b.stop()
        app_a.close()
        app_b.close()


def test_a_takeover_waits_for_the_former_owners_batch_in_flight(postgres_url: str) -> None:
    # A's batch has passed the fence and not committed when A's lock
    # connection is terminated: B's takeover waits for that batch (the
    # generation row is locked), then starts from the position it committed.
    app_a, app_b = make_app(postgres_url), make_app(postgres_url)
    a, b = ReadModel(app_a), ReadModel(app_b)
    pa, pb = a.projector, b.projector
    assert pa is not None and pb is not None
    try:
        Workload(app_a).run(150)
        assert pa.take_ownership()
        pa.batch_size = 50
        assert pa.run_batch() > 0  # (A folds a first batch as the owner)
        first = pa.position
        in_batch, release = threading.Event(), threading.Event()
        checked = pa._batches.check
        assert checked is not None

        def check_then_hold(cursor: object) -> None:
            checked(cursor)
            in_batch.set()
            release.wait(30)

        pa._batches.check = check_then_hold
        batch = threading.Thread(target=pa.run_batch)
        batch.start()
        assert in_batch.wait(30)
        terminate(postgres_url, lock_backend(a))
        took: list[bool] = []
        takeover = threading.Thread(target=lambda: took.append(pb.take_ownership()))
        takeover.start()
        with psycopg.connect(postgres_url, autocommit=True) as admin:

            def b_waits_on_the_generation_row() -> bool:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                    (pb.ownership._conn.info.backend_pid if pb.ownership._conn else -1,),  # type: ignore[union-attr]
                ).fetchone()
                return bool(row and row[0])

            assert poll(b_waits_on_the_generation_row, 30)
        assert not took
        release.set()
        batch.join(30)
        takeover.join(30)
        assert took == [True]
        committed = pa.table.position()
        assert committed > first  # A's second batch committed before B took over
        assert pb.position == 0  # (B, a standby so far, has folded nothing)
        pb.run_batch()  # B resumes from the stored position
        assert pb.position == committed
    finally:
        release.set()
        a.stop()
        b.stop()
        app_a.close()
        app_b.close()


def test_a_standby_follows_the_live_table_after_a_rebuild_dropped_its_own(postgres_url: str) -> None:
    """A rebuild takes over and drops the table a standby was watching: the
    standby follows the live one, so its position (what wait_for and the
    readiness at start look at) keeps moving."""
    from sessions.projection.rebuild import rebuild

    app_a, app_b = make_app(postgres_url), make_app(postgres_url)
    a, b = ReadModel(app_a), ReadModel(app_b)
    pa, pb = a.projector, b.projector
    assert pa is not None and pb is not None
    try:
        Workload(app_a).run(60)
        assert pa.take_ownership() and not pb.take_ownership()
        pa.catch_up()
        old = pb.table.table
        result = rebuild(app_a)
        assert result.dropped == [old]
        Workload(app_a, seed=5).run(40)
        def turn(projector) -> bool:  # type: ignore[no-untyped-def]
            try:  # as the tailing thread runs a turn
                return bool(projector.step())
            except Exception as e:  # noqa: BLE001
                return bool(projector.failed(e))

        while turn(pa):  # the owner finds its table gone, moves to the live one, folds
            pass
        turn(pb)  # the standby's turn: it follows the owner
        assert pb.table.table == result.table != old
        assert pb.position == pa.table.position() == head(app_a)
    finally:
        a.stop()
        b.stop()
        app_a.close()
        app_b.close()


def test_a_standby_waits_in_the_lock_takes_it_when_the_owner_goes_and_stops_promptly(postgres_url: str) -> None:
    """A started standby waits in pg_advisory_lock (a lock not granted, which
    status shows as a standby); the owner's session ending hands it the lock
    with no poll; stop() cancels a wait (its thread ends, its backend goes)."""
    from sessions.projection.ownership import projectors

    app_a, app_b, app_c = make_app(postgres_url), make_app(postgres_url), make_app(postgres_url)
    a, b, c = ReadModel(app_a), ReadModel(app_b), ReadModel(app_c)
    pa, pb, pc = a.projector, b.projector, c.projector
    assert pa is not None and pb is not None and pc is not None
    try:
        Workload(app_a).run(50)
        assert pa.take_ownership()
        b.start()
        c.start()

        def waiting() -> set[int]:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
                    (pa.ownership.key,),  # type: ignore[union-attr]
                ).fetchall()
            return {int(r[0]) for r in rows}

        assert poll(lambda: len(waiting()) == 2, 30)
        listed = projectors(app_a, "session_snapshots")
        assert listed is not None
        assert [p.role for p in listed] == ["owner", "standby", "standby"]

        c.stop()  # a waiting standby stops: its wait is cancelled, its connection closed
        assert not pc.ownership._thread.is_alive()  # type: ignore[union-attr]
        assert poll(lambda: len(waiting()) == 1, 30)

        terminate(postgres_url, lock_backend(a))
        assert poll(lambda: pb.ownership.held, 30)  # B was waiting: the server handed it the lock
        assert not waiting()
        assert poll(lambda: pb.position == head(app_b), 30)  # and folds
    finally:
        a.stop()
        b.stop()
        if pc.ownership._thread.is_alive():  # type: ignore[union-attr]
            c.stop()
        app_a.close()
        app_b.close()
        app_c.close()


def test_stopping_right_after_the_lock_was_granted_does_not_stand_by(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # stop() lands between pg_try_advisory_lock granting the lock and the
    # generation's increment: _take says no; the ownership thread must end,
    # not say "standing by" and wait for the lock again.
    app = make_app(postgres_url)
    ownership = PostgresOwnership(app, "stopping-test")
    try:
        ownership._stopped.set()
        with caplog.at_level(logging.INFO, logger="sessions.projection.ownership"):
            ownership._stand_by()
        assert not ownership.held
        assert "standing by" not in caplog.text
    finally:
        ownership.stop()
        app.close()


def test_news_of_a_batch_run_before_ownership_was_taken_drops_nothing(postgres_url: str) -> None:
    # A batch that found this process not the owner (NotOwner, generation
    # None) reports it after the ownership thread took the lock: the new
    # generation stays; only a batch of the current generation drops it.
    app = make_app(postgres_url)
    ownership = PostgresOwnership(app, "lost-test")
    try:
        assert ownership.try_take()
        generation = ownership.generation
        assert generation is not None
        ownership.lost(None)
        ownership.lost(generation - 1)
        assert ownership.held and ownership.generation == generation
        ownership.lost(generation)
        assert not ownership.held
    finally:
        ownership.stop()
        app.close()
