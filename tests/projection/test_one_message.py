"""On PostgreSQL a command's write (its events, and its sessions' rows into
every table the registry names) is one message that the server runs as one
transaction and commits at its end: the events table's lock is never held
while this process builds, sends or waits for anything (store.recorders).

Checked on the wire, with libpq's trace of the connection: the write sends
exactly one frontend message, a simple-protocol Query, and the server's
answer ends ready for the next query outside any transaction (committed)."""

from __future__ import annotations

import re
import tempfile

import pytest
from eventsourcing.persistence import StoredEvent
from projection_support import PRINCIPAL, Workload, make_app
from psycopg import pq

from sessions.projection.fold import SessionFold
from sessions.projection.registry import Registry
from sessions.projection.row_tables import WRITE_ROWS_FUNCTION, _create_write_rows, rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version
from sessions.projection.write_through import WriteThrough

pytestmark = pytest.mark.postgres


def _traced_messages(app, write) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """(direction F or B, message type, the rest) of every message of
    ``write()`` on the pool's only connection, from libpq's trace."""
    datastore = app.factory.datastore
    with tempfile.TemporaryFile("w+") as trace:
        with datastore.get_connection() as conn:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            write()
        finally:
            with datastore.get_connection() as conn:
                conn.pgconn.untrace()
        trace.seek(0)
        text = trace.read()
    return [(m[1], m[2], m[3]) for m in _MESSAGE.finditer(text)]


# A message's line: direction, length, type, the rest (a Query's text may
# span lines: only lines that start as a message are matched).
_MESSAGE = re.compile(r"^(F|B)\t\d+\t(\w+)\t? ?(.*)$", re.MULTILINE)


def test_a_write_with_rows_is_one_query_message_and_commits(postgres_url: str) -> None:
    app = make_app(f"{postgres_url}?pool_size=1&max_overflow=0")
    try:
        session_id = Workload(app).open("c-one-message")
        # A build in progress, so that the rows go into two tables.
        registry = Registry.of(app)
        live = rows_on(app, registry.get(NAME).live_table)
        building = rows_on(app, registry.next_build_table(NAME, code_version(NAME)))
        registry.start_build(NAME, building.table, code_version(NAME))
        session = app.get_session(session_id)
        session.heartbeat(now=app.clock(), policy=app.policy, principal=PRINCIPAL)  # a new event, not saved yet
        rows = WriteThrough(app).rows_for([session])
        assert rows is not None
        events = app.mapper.to_stored_event  # (the library's own mapping)
        stored = [events(e) for e in session.collect_events()]

        messages = _traced_messages(app, lambda: app.recorder.insert_events(stored, also=[rows]))

        sent = [kind for direction, kind, _ in messages if direction == "F"]
        assert sent == ["Query"], messages
        answered = [(kind, rest) for direction, kind, rest in messages if direction == "B"]
        assert "ErrorResponse" not in [kind for kind, _ in answered], messages
        # Ready for the next query, idle: no transaction left open (committed).
        assert answered[-1] == ("ReadyForQuery", "I"), messages
        expected = SessionFold(app.mapper).row(app.get_session(session_id))
        for table in (live, building):
            assert table.row_version(session_id) == session.version
            assert table.get(session_id).session == expected.session  # type: ignore[union-attr]
    finally:
        app.close()


def test_a_write_refused_after_its_insert_commits_none_of_its_statements(postgres_url: str) -> None:
    """A row refused inside the rows' function (the message's last
    statement, after the events' insert and the live table's upsert) leaves
    nothing of the message: not the events, not the live table's row."""
    app = make_app(postgres_url)
    try:
        session_id = Workload(app).open("c-refused")
        registry = Registry.of(app)
        live = rows_on(app, registry.get(NAME).live_table)
        through = WriteThrough(app)
        building = rows_on(app, registry.next_build_table(NAME, code_version(NAME)))
        registry.start_build(NAME, building.table, code_version(NAME))
        with app.factory.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
            cursor.execute(f"ALTER TABLE {building.table} ADD CONSTRAINT refuses CHECK (version < 0)")
        before = live.row_version(session_id)
        head = app.recorder.max_notification_id()
        session = app.get_session(session_id)
        session.heartbeat(now=app.clock(), policy=app.policy, principal=PRINCIPAL)
        rows = through.rows_for([session])
        other = StoredEvent("c-refused-other", 1, "tests.Event", b"{}")
        stored = [other, *(app.mapper.to_stored_event(e) for e in session.collect_events())]

        with pytest.raises(Exception, match="refuses"):  # noqa: PT011 - the store's own error
            app.recorder.insert_events(stored, also=[rows])

        assert app.recorder.max_notification_id() == head
        assert app.recorder.select_events("c-refused-other") == []
        assert live.row_version(session_id) == before
        assert building.row_version(session_id) is None
    finally:
        app.close()


def test_a_table_the_function_does_not_know_is_written_too(postgres_url: str) -> None:
    """The function upserts with static statements into the tables current
    when it was made; a table registered after (a build started by another
    process, say) is written through its dynamic branch."""
    app = make_app(postgres_url)
    try:
        session_id = Workload(app).open("c-unknown-table")
        registry = Registry.of(app)
        live = rows_on(app, registry.get(NAME).live_table)
        building = rows_on(app, registry.next_build_table(NAME, code_version(NAME)))
        through = WriteThrough(app)
        # Made again knowing only the live table (as a process that started
        # before the build's table existed made it).
        _create_write_rows(app.factory.datastore, live.table)  # type: ignore[attr-defined]
        assert building.table not in _function_text(app)
        registry.start_build(NAME, building.table, code_version(NAME))

        session = app.get_session(session_id)
        session.heartbeat(now=app.clock(), policy=app.policy, principal=PRINCIPAL)
        rows = through.rows_for([session])
        app.recorder.insert_events([app.mapper.to_stored_event(e) for e in session.collect_events()], also=[rows])

        assert building.table not in _function_text(app)
        for table in (live, building):
            assert table.row_version(session_id) == session.version
    finally:
        app.close()


def _function_text(app) -> str:  # type: ignore[no-untyped-def]
    with app.factory.datastore.transaction(commit=False) as cursor:
        cursor.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
            (WRITE_ROWS_FUNCTION,),
        )
        return str(cursor.fetchone()["prosrc"])
