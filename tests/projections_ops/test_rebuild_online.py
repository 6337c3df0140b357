"""Rebuilding the read model while a server serves it and writes go on, and
a server started on a read model of an older version.

The rebuild runs in the test's thread through another application on the
same store (as `sessions projections rebuild` would, from another process),
while a writer and a reader call the server through gRPC and record every
answer. The switch must be invisible to them: no call fails, a write's own
GetSession shows it, and no session ever shows less progress than before."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import grpc
from eventsourcing.persistence import OperationalError

from sessions.api.protos import service_pb2, session_pb2
from sessions.projection.projector import Projector
from sessions.projection.rebuild import rebuild
from sessions.projection.registry import Registry
from sessions.projection.row_tables import open_rows, rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version
from sessions.projection.status import read_model_status
from sessions.projection.verify import differences
from sessions.server import SessionsServer
from sessions.store.clock import ManualClock
from tests.projection.projection_support import POLICY, Workload, head
from tests.waiting import wait_until

from .ops_support import Traffic, rows_of, sessions_of, sql, table_exists


def rebuild_again_if_sqlite_was_locked(app, **kwargs):  # type: ignore[no-untyped-def]
    """rebuild(), run again when it failed at once with SQLite's "database is
    locked" because a writer held the lock while it created its table (a bug:
    see test_a_new_table_waits_for_a_concurrent_sqlite_writer); an operator
    would do the same. Nothing was folded before such a failure."""
    for attempt in range(5):
        try:
            return rebuild(app, **kwargs)
        except OperationalError as e:
            if "database is locked" not in str(e) or attempt == 4:
                raise


def served(stub, session_id: str) -> session_pb2.SynchronizationSession:  # type: ignore[no-untyped-def]
    return stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session


def test_rebuild_under_concurrent_writes_takes_over_without_a_failed_call(store_url, start_server, apps) -> None:  # type: ignore[no-untyped-def]
    writer = apps(store_url)
    workload = Workload(writer)
    workload.bulk(sessions=200, rounds=2)
    # The server's clock stands still after the workload's: nothing expires
    # or stalls, so every write in the log is one the test made.
    server = start_server(store_url, clock=ManualClock(workload.clock() + timedelta(seconds=1)), policy=POLICY)
    old = server.server.read_model.live_table
    assert wait_until(lambda: server.server.projector.position >= head(writer), 30)

    app = apps(store_url)  # the rebuild's own application, as another process
    traffic = Traffic(server.sessions, list(workload.open_ids), list(workload.expected)).start()
    try:
        assert wait_until(lambda: traffic.writes >= 20 or bool(traffic.failures), 30), traffic.failures
        writes_before = traffic.writes
        began = time.monotonic()
        result = rebuild_again_if_sqlite_was_locked(app, batch_size=50)
        ended = time.monotonic()
        writes_during = traffic.writes - writes_before

        registration = Registry.of(app).get(NAME)
        assert registration.live_table == result.table != old
        assert registration.live_version == result.version == code_version(NAME)
        assert registration.building_table is None
        assert result.replaced == old
        # The server moves to the new table by itself, and keeps being written.
        assert wait_until(lambda: server.server.read_model.live_table == result.table, 20)
        moved_at = traffic.writes
        assert wait_until(lambda: traffic.writes >= moved_at + 20 or bool(traffic.failures), 30)
    finally:
        traffic.stop()

    assert traffic.failures == []
    assert writes_during > 0, "no write happened while the rebuild ran"
    during = traffic.reads_between(began, ended)
    assert during, "no GetSession happened while the rebuild ran"
    failed_reads = [r for r in traffic.reads if not r.ok]
    assert failed_reads == []

    projector = server.server.projector
    assert projector.wait_for(head(app), timeout=20)
    assert server.server.read_model.live_table == result.table
    view = rows_on(app, result.table)
    assert list(differences(app, view)) == []
    assert set(rows_of(app, view.table)) == set(workload.expected) | set(traffic.open_ids)
    for session_id in traffic.open_ids[-5:]:
        assert served(server.sessions, session_id) == session_pb2.SynchronizationSession.FromString(
            sessions_of(app, view.table)[session_id]
        )

    # Dropped at once: nothing reads it.
    assert result.dropped == [old] and result.kept == []
    assert not table_exists(app, old)
    assert not table_exists(app, f"{old}_parked")


def test_rebuild_keep_old_leaves_the_replaced_table_as_it_was(store_url, start_server, apps) -> None:  # type: ignore[no-untyped-def]
    app = apps(store_url)
    workload = Workload(app)
    workload.run(150, containers=4)
    server = start_server(store_url, clock=ManualClock(workload.clock()), policy=POLICY)
    old = server.server.read_model.live_table
    assert server.server.projector.wait_for(head(app), timeout=20)
    before = rows_of(app, old)
    assert set(before) == set(workload.expected)

    result = rebuild(apps(store_url), keep_old=True)
    assert (result.replaced, result.kept, result.dropped) == (old, [old], [])
    assert Registry.of(app).get(NAME).live_table == result.table != old
    assert wait_until(lambda: server.server.read_model.live_table == result.table, 20)
    assert rows_of(app, result.table) == before
    assert table_exists(app, old) and rows_of(app, old) == before
    for session_id in list(workload.expected)[:10]:
        assert served(server.sessions, session_id) == session_pb2.SynchronizationSession.FromString(
            before[session_id][1]
        )


# --- versions ---------------------------------------------------------------------------


def stored_at_version_zero(store_url: str, apps) -> tuple:  # type: ignore[no-untyped-def]
    """A store whose read model is caught up but registered as version 0,
    as if written by an older build."""
    app = apps(store_url)
    workload = Workload(app)
    workload.run(300, containers=6)
    view = open_rows(app)
    Projector(app, view).catch_up()
    sql(app, "UPDATE read_models SET live_version = 0 WHERE name = ?", (NAME,))
    return app, workload, view


def test_an_older_stored_version_keeps_serving_and_says_to_rebuild(store_url, start_server, apps, caplog) -> None:  # type: ignore[no-untyped-def]
    app, workload, view = stored_at_version_zero(store_url, apps)
    rows = sessions_of(app, view.table)
    with caplog.at_level(logging.WARNING, logger="sessions.read_model"):
        server = start_server(store_url, clock=ManualClock(workload.clock()), policy=POLICY)
    warnings = [r.getMessage() for r in caplog.records if r.name == "sessions.read_model"]
    assert any("version 0" in m and f"version {code_version(NAME)}" in m and "rebuild" in m for m in warnings), warnings

    assert server.server.read_model.outdated
    assert server.server.read_model.live_table == view.table
    for session_id in list(workload.expected)[:20]:
        assert served(server.sessions, session_id) == session_pb2.SynchronizationSession.FromString(rows[session_id])
    # A write is folded into the old table, which keeps serving.
    session_id = workload.open_ids[0]
    reported = server.sessions.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=session_id,
            progress_entries=[
                session_pb2.ProgressEntry(
                    object_type=1, change_info=[session_pb2.ChangeInfo(change_type=1, successful=3)]
                )
            ],
        )
    )
    shown = session_pb2.SynchronizationSession()
    assert reported.response.Unpack(shown)
    assert served(server.sessions, session_id) == shown

    status = read_model_status(app)
    assert status.state == "behind"
    assert status.live.version == 0 and status.code_version == code_version(NAME)
    assert status.live.table == view.table and status.building is None
    assert "rebuild" in status.advice
    registration = Registry.of(app).get(NAME)
    assert (registration.live_table, registration.live_version, registration.building_table) == (view.table, 0, None)


def test_rebuild_on_start_builds_the_current_version_while_the_old_one_serves(store_url, apps) -> None:  # type: ignore[no-untyped-def]
    app, workload, view = stored_at_version_zero(store_url, apps)
    old = view.table
    server = SessionsServer(
        store_url, "127.0.0.1:0", policy=POLICY, clock=ManualClock(workload.clock()), rebuild_on_start=True
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        from sessions.api.protos import service_pb2_grpc

        stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
        registry = Registry.of(app)

        def build_table_created() -> bool:
            registration = registry.get(NAME)
            if registration.live_version == code_version(NAME):
                return True
            return registration.building_table is not None and table_exists(app, registration.building_table)

        # Writes start once the build has its table: creating it under a
        # concurrent writer fails on SQLite (see the test below).
        assert wait_until(build_table_created, 20, interval=0.01)
        traffic = Traffic(stub, list(workload.open_ids), list(workload.expected)).start()
        try:
            assert wait_until(lambda: registry.get(NAME).live_version == code_version(NAME), 30, interval=0.02)
            new = registry.get(NAME).live_table
            assert new != old
            assert wait_until(lambda: server.read_model.live_table == new, 20)
            moved_at = traffic.writes
            assert wait_until(lambda: traffic.writes >= moved_at + 10 or bool(traffic.failures), 30)
        finally:
            traffic.stop()
        assert traffic.failures == []
        assert traffic.reads and [r for r in traffic.reads if not r.ok] == []
        assert server.projector is not None and server.projector.wait_for(head(app), timeout=20)
        assert list(differences(app, rows_on(app, new))) == []
        status = read_model_status(app)
        assert (status.state, status.live.table, status.live.version, status.advice) == (
            "live",
            new,
            code_version(NAME),
            "",
        )
        # Once the server left it, the old version's table goes.
        assert wait_until(lambda: not table_exists(app, old), 40, interval=0.1)
    finally:
        channel.close()
        server.stop(grace=1)


def test_a_new_table_waits_for_a_concurrent_sqlite_writer(tmp_path, apps) -> None:  # type: ignore[no-untyped-def]
    import sqlite3
    import threading

    path = tmp_path / "sessions.db"
    app = apps(f"sqlite://{path}")
    Workload(app).run(30)
    open_rows(app)
    writer = sqlite3.connect(path, isolation_level=None)
    outcome: list[BaseException | str] = []

    def create() -> None:
        try:
            rows_on(app, "session_snapshots_v1_b7")
            outcome.append("created")
        except BaseException as e:  # noqa: BLE001 - the outcome is asserted below
            outcome.append(e)

    writer.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    writer.execute("INSERT INTO tracking VALUES ('another-writer', 1)")
    creating = threading.Thread(target=create)
    creating.start()
    # Give a wrong, immediate failure the chance to show; a right one waits.
    wait_until(lambda: bool(outcome), 1.0, interval=0.01)
    writer.execute("COMMIT")
    creating.join(30)
    writer.close()
    assert outcome == ["created"]
    assert table_exists(app, "session_snapshots_v1_b7")


def test_a_takeover_never_shows_less_than_was_answered(store_url, start_server, apps) -> None:  # type: ignore[no-untyped-def]
    # A build is registered, then writes are answered through a server with
    # no projector; the build folds only the log as it was at registration
    # and takes over: reads show every answered write at once, because each
    # write wrote its rows into the registered build too.
    app = apps(store_url)
    workload = Workload(app)
    workload.run(100, containers=3)
    live = open_rows(app)
    Projector(app, live).catch_up()
    server = start_server(store_url, clock=ManualClock(workload.clock()), policy=POLICY, run_projector=False)
    registry = Registry.of(app)
    table = registry.next_build_table(NAME, code_version(NAME))
    building = rows_on(app, table)
    registry.start_build(NAME, table, code_version(NAME))
    cut = head(app)

    session_id = workload.open_ids[0]
    server.sessions.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=session_id,
            progress_entries=[
                session_pb2.ProgressEntry(
                    object_type=session_pb2.USER,
                    change_info=[session_pb2.ChangeInfo(change_type=session_pb2.CREATE, successful=7)],
                )
            ],
        ),
        timeout=10,
    )
    shown = served(server.sessions, session_id)
    assert head(app) > cut

    def log_until_cut(after: int, limit: int):  # type: ignore[no-untyped-def]
        if after >= cut:
            return [], after
        batch = list(app.recorder.select_notifications(start=after, limit=limit, stop=cut, inclusive_of_start=False))
        return batch, (batch[-1].id if len(batch) >= limit else cut)

    result = rebuild(apps(store_url), feed=log_until_cut)
    assert result.table == building.table and building.position() == cut
    assert server.server.read_model.live_table == result.table
    assert served(server.sessions, session_id) == shown
    assert not table_exists(app, live.table)
