"""Rows written with a command's events (projection.write_through): a write
answers with its rows already readable, the projector folding the same
events later changes nothing, and rows never move back."""

from __future__ import annotations

import dataclasses
import threading

import grpc
import pytest
from eventsourcing.persistence import StoredEvent, Tracking
from projection_support import Workload, make_app

from sessions.api.operations import renderer
from sessions.api.protos import service_pb2
from sessions.domain.commands import ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.projection import write_through
from sessions.projection.fold import SessionFold
from sessions.projection.projector import Projector
from sessions.projection.registry import Registry
from sessions.projection.row_tables import COLUMN_TYPES, PostgresSessionRows, open_rows, rows_on
from sessions.projection.rows import COLUMNS, NAME
from sessions.projection.schema import version as code_version
from sessions.projection.write_through import RowWrite, Tables
from sessions.store.application import Caller, SessionsApplication
from sessions.store.urls import parse_store_url
from tests.requests import created_users, report_request
from tests.waiting import wait_until


def open_request(container: str) -> service_pb2.OpenSessionRequest:
    return service_pb2.OpenSessionRequest(
        subject_container_id=container, agent_id="agent-1", session_type=SessionType.AD_SYNC.value
    )


def opened_id(server, container: str) -> str:  # type: ignore[no-untyped-def]
    operation = server.sessions.OpenSession(open_request(container), timeout=10)
    response = service_pb2.OpenSessionResponse()
    operation.response.Unpack(response)
    return response.opened_session.session_id


def test_a_write_is_readable_when_it_answers_with_no_projector_anywhere(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_projector=False, run_deadlines=False)
    session_id = opened_id(server, "c-1")
    for _ in range(3):
        server.sessions.ReportSessionProgress(report_request(session_id, 2), timeout=10)
    shown = server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id), timeout=10)
    assert created_users(shown.session) == 6

    app = server.server.app
    view = open_rows(app)
    assert view.position() == 0  # nothing was projected: the writes wrote the row
    assert view.row_version(session_id) == app.get_session(session_id).version


def test_the_projector_folding_the_same_events_later_changes_nothing(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_projector=False, run_deadlines=False)
    ids = [opened_id(server, f"c-{k}") for k in range(3)]
    for k, session_id in enumerate(ids):
        server.sessions.ReportSessionProgress(report_request(session_id, k + 1), timeout=10)
    server.sessions.CloseSession(service_pb2.CloseSessionRequest(session_id=ids[0]), timeout=10)
    app = server.server.app
    view = open_rows(app)
    written = {sid: view.get(sid) for sid in ids}

    Projector(app, view).catch_up()
    assert {sid: view.get(sid) for sid in ids} == written
    # ... and what the writers wrote is what a fold of the log gives.
    folded = rows_on(app, "session_snapshots_check")
    Projector(app, folded).catch_up()
    assert {sid: folded.get(sid) for sid in ids} == written
    # The states they resume from are the same too (taken at other moments).
    fold = SessionFold(app.mapper)

    def resumed(table) -> dict[str, dict]:  # type: ignore[no-untyped-def]
        points = table.resume_points(ids)
        return {sid: vars(fold.resume(sid, *points[sid])) for sid in ids}

    assert resumed(folded) == resumed(view)


def test_a_row_never_moves_back_to_an_older_version(store_url) -> None:  # type: ignore[no-untyped-def]
    app = make_app(store_url)
    try:
        workload = Workload(app)
        session_id = workload.open("c-1")
        for _ in range(3):
            workload.report(session_id)
        fold = SessionFold(app.mapper)
        view = rows_on(app, "session_snapshots_order")
        latest = app.get_session(session_id)
        older = app.get_session(session_id, version=latest.version - 2)
        view.save([fold.row(latest)], Tracking(view.tracking_name, 1))
        view.save([fold.row(older)], Tracking(view.tracking_name, 2))
        assert view.row_version(session_id) == latest.version
        assert view.get(session_id).session == fold.row(latest).session  # type: ignore[union-attr]
    finally:
        app.close()


def test_rows_written_together_in_one_statement_each_move_only_forward(store_url) -> None:  # type: ignore[no-untyped-def]
    """Several rows in one write (PostgreSQL: one statement of arrays): each
    row is inserted or moves forward on its own, never back."""
    app = make_app(store_url)
    try:
        ids = _reported_sessions(Workload(app), 3)
        fold = SessionFold(app.mapper)
        view = rows_on(app, "session_snapshots_together")
        latest = {sid: app.get_session(sid) for sid in ids}
        older = {sid: app.get_session(sid, version=latest[sid].version - 1) for sid in ids}
        view.save([fold.row(latest[ids[0]]), fold.row(older[ids[1]])], Tracking(view.tracking_name, 1))
        # In one write: a row older than the stored one (loses), a newer one
        # (wins), a new one (inserted).
        rows = [fold.row(older[ids[0]]), fold.row(latest[ids[1]]), fold.row(latest[ids[2]])]
        view.save(rows, Tracking(view.tracking_name, 2))
        for sid in ids:
            assert view.row_version(sid) == latest[sid].version
            assert view.get(sid).session == fold.row(latest[sid]).session  # type: ignore[union-attr]
    finally:
        app.close()


def test_a_write_is_read_back_at_once_while_the_projector_folds_nothing(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_deadlines=False)
    session_id = opened_id(server, "c-1")
    get = service_pb2.GetSessionRequest(session_id=session_id)
    projector = server.server.read_model.projector
    with projector._batch_lock:  # the projector folds nothing meanwhile
        before = server.sessions.GetSession(get, timeout=10).session
        server.sessions.ReportSessionProgress(report_request(session_id, 5), timeout=10)
        after = server.sessions.GetSession(get, timeout=10).session
    assert created_users(before) == 0 and created_users(after) == 5


def test_every_process_serves_what_another_process_answered(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    # P serves with its projector; B is another API process on the same
    # store. A write answered by B is what P serves next, with P's projector
    # folding nothing meanwhile, and the other way round.
    p = start_server(store_url, run_deadlines=False)
    b = start_server(store_url, run_projector=False, run_deadlines=False)
    session_id = opened_id(p, "c-1")
    get = service_pb2.GetSessionRequest(session_id=session_id)
    with p.server.read_model.projector._batch_lock:
        for k in range(1, 4):
            b.sessions.ReportSessionProgress(report_request(session_id, 1), timeout=10)
            assert created_users(p.sessions.GetSession(get, timeout=10).session) == 2 * k - 1
            p.sessions.ReportSessionProgress(report_request(session_id, 1), timeout=10)
            assert created_users(b.sessions.GetSession(get, timeout=10).session) == 2 * k


def test_a_refused_write_writes_no_row(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_projector=False, run_deadlines=False)
    session_id = opened_id(server, "c-1")
    server.sessions.CloseSession(service_pb2.CloseSessionRequest(session_id=session_id), timeout=10)
    view = open_rows(server.server.app)
    version = view.row_version(session_id)
    with pytest.raises(grpc.RpcError) as refused:
        server.sessions.ReportSessionProgress(report_request(session_id, 1), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert view.row_version(session_id) == version


def test_the_projector_passes_over_written_rows_and_folds_what_others_wrote(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_deadlines=False)
    projector = server.server.read_model.projector
    other = SessionsApplication(parse_store_url(store_url))  # another process, writing no rows
    folded: list[list[str]] = []
    apply = projector.fold.apply

    def recording_apply(sessions, notifications):  # type: ignore[no-untyped-def]
        notifications = list(notifications)
        folded.append([n.topic for n in notifications if str(n.originator_id) == session_id])
        return apply(sessions, notifications)

    try:
        with projector._batch_lock:  # the projector folds nothing meanwhile
            session_id = opened_id(server, "c-1")
            server.sessions.ReportSessionProgress(report_request(session_id, 2), timeout=10)
            projector.fold.apply = recording_apply  # type: ignore[method-assign]
        # Written with their events: the projector passes over them.
        head = server.server.app.recorder.max_notification_id() or 0
        assert projector.wait_for(head, 10)
        assert not any(folded), folded
        with projector._batch_lock:
            report = [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 3, 0),))]
            caller = Caller("agent:other")
            render = renderer("ReportSessionProgress", caller.principal)
            other.execute(ReportProgress(session_id, tuple(report)), caller, render)
        head = other.recorder.max_notification_id() or 0
        assert projector.wait_for(head, 10)
        assert ["sessions.ProgressReported"] in folded  # what the other wrote without its row
        get = service_pb2.GetSessionRequest(session_id=session_id)
        assert created_users(server.sessions.GetSession(get, timeout=10).session) == 5
        assert open_rows(other).row_version(session_id) == 3
    finally:
        other.close()


def test_rows_of_a_group_commit_go_in_one_write_per_table_with_the_newest_row_of_each_session(  # type: ignore[no-untyped-def]
    store_url, monkeypatch
) -> None:
    app = make_app(store_url)
    try:
        ids = _reported_sessions(Workload(app), 3)
        fold = SessionFold(app.mapper)
        registry = Registry.of(app)
        live = rows_on(app, registry.get(NAME).live_table)
        # A build in progress: writes go to it as well as to the live table.
        building = rows_on(app, registry.next_build_table(NAME, code_version(NAME)))
        registry.start_build(NAME, building.table, code_version(NAME))
        opened = {live.table: live, building.table: building}
        upserts: list[tuple[str, list[str]]] = []
        calls: list[list[str]] = []  # PostgreSQL: one call, the server writes both tables

        def counted_call(cursor, rows, real=write_through.write_rows):  # type: ignore[no-untyped-def]
            calls.append([r.session_id for r in rows])
            real(cursor, rows)

        monkeypatch.setattr(write_through, "write_rows", counted_call)
        for table in opened.values():
            real = table.upsert_in

            def counted(cursor, rows, real=real, table=table):  # type: ignore[no-untyped-def]
                upserts.append((table.table, [r.session_id for r in rows]))
                real(cursor, rows)

            table.upsert_in = counted  # type: ignore[method-assign]
        tables = Tables(registry, opened.__getitem__)
        latest = {sid: app.get_session(sid) for sid in ids}
        older = app.get_session(ids[1], version=latest[ids[1]].version - 1)
        writes = [
            RowWrite(tables, [fold.row(latest[ids[0]])]),
            RowWrite(tables, [fold.row(latest[ids[1]])]),
            RowWrite(tables, [fold.row(older)]),  # the same session, older: loses
            RowWrite(tables, [fold.row(latest[ids[2]])]),
        ]

        recorder = app.recorder
        results: list[object] = []
        with recorder._turns:  # as if a save were committing: these queue up
            recorder._committing = True
        threads = [
            threading.Thread(
                target=lambda k=k, w=w: results.append(
                    recorder.insert_events([StoredEvent(f"group-{k}", 1, "tests.Event", b"{}")], also=[w])
                )
            )
            for k, w in enumerate(writes)
        ]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(recorder._queue) == len(writes), timeout=10)
        recorder._pass_turn()  # to the first save queued: it commits them all
        for t in threads:
            t.join(10)

        assert len(results) == len(writes) and recorder.group_sizes.largest == len(writes)
        if registry.postgres:
            assert (calls, upserts) == ([sorted(ids)], [])
        else:
            assert sorted(upserts) == sorted([(live.table, sorted(ids)), (building.table, sorted(ids))])
        for view in (live, building):
            for sid in ids:
                assert view.row_version(sid) == latest[sid].version
                assert view.get(sid).session == fold.row(latest[sid]).session  # type: ignore[union-attr]
    finally:
        app.close()


def test_a_command_transaction_with_more_rows_than_a_bulk_batch_writes_them_all(store_url) -> None:  # type: ignore[no-untyped-def]
    """Rows written with events go in one statement however many (on
    PostgreSQL one call of the rows' function in the write's message): as
    many as a projector batch that COPY would write."""
    app = make_app(store_url)
    try:
        workload = Workload(app)
        template = SessionFold(app.mapper).row(app.get_session(workload.open("c-1")))
        count = PostgresSessionRows.BULK + 50
        rows = [dataclasses.replace(template, session_id=f"bulk-{k:04d}") for k in range(count)]
        registry = Registry.of(app)
        live = rows_on(app, registry.get(NAME).live_table)
        tables = Tables(registry, {live.table: live}.__getitem__)

        ids = app.recorder.insert_events(
            [StoredEvent("bulk-events", 1, "tests.Event", b"{}")], also=[RowWrite(tables, rows)]
        )

        assert ids is None or len(ids) == 1
        assert live.row_versions(r.session_id for r in rows) == {r.session_id: template.version for r in rows}
    finally:
        app.close()


@pytest.mark.postgres
def test_the_column_types_of_the_arrays_statement_are_the_tables(postgres_url: str) -> None:
    """row_tables.COLUMN_TYPES (the arrays' casts) repeats the types of
    projections/session_snapshots/postgresql.sql: both must agree, else a
    value is cast to another type than the column's on every multi-row write."""
    app = make_app(postgres_url)
    try:
        table = open_rows(app).table
        datastore = app.factory.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn:
            found = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (table,),
            ).fetchall()
        assert [(r["attname"], r["type"]) for r in found] == list(zip(COLUMNS, COLUMN_TYPES, strict=True))
    finally:
        app.close()


def _reported_sessions(workload: Workload, count: int) -> list[str]:
    """``count`` sessions, each opened in a container of its own and reported once."""
    ids = [workload.open(f"c-{k}") for k in range(count)]
    for session_id in ids:
        workload.report(session_id)
    return ids
