"""A takeover (the end of a rebuild) while a transaction keeps reading the
read view: writes go on, reads go on, and the takeover completes once the
reader is done.

Replacing the view waits for every transaction that has read it. Were the
registration locked first, every write would wait for that reader, holding
the events table's lock (each write reads the registration in its own
transaction): the takeover replaces the view first, waiting for it a
bounded time at a time (projection.registry)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from sessions.projection.registry import Registry, live_view
from sessions.projection.row_tables import rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version
from sessions.projection.write_through import WriteThrough
from tests.projection.projection_support import Workload
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def _waiting_for_the_view(url: str) -> bool:
    """Whether some backend waits for a lock on the read view."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
            (live_view(NAME),),
        ).fetchone()
    return bool(row and row[0])


def test_a_takeover_waits_for_a_reader_of_the_view_and_writes_do_not(postgres_url: str, apps) -> None:  # type: ignore[no-untyped-def]
    app = apps(postgres_url)
    app.with_events = WriteThrough(app)
    workload = Workload(app)
    ids = [workload.open(f"c-{k}") for k in range(3)]
    registry = Registry.of(app)
    old = registry.get(NAME).live_table
    registry.define_view(NAME)  # (as a server does when it starts)
    building = rows_on(app, registry.next_build_table(NAME, code_version(NAME)))
    registry.start_build(NAME, building.table, code_version(NAME))

    with psycopg.connect(postgres_url) as reader:  # a transaction that has read the view, left open
        reader.execute(f"SELECT count(*) FROM {live_view(NAME)}").fetchone()
        took_over: list[BaseException | None] = []

        def take_over() -> None:
            try:
                registry.take_over(NAME, building.table, code_version(NAME))
                took_over.append(None)
            except BaseException as e:  # noqa: BLE001 - reported below
                took_over.append(e)

        taker = threading.Thread(target=take_over, daemon=True)
        taker.start()
        assert wait_until(lambda: _waiting_for_the_view(postgres_url), 20, 0.01)

        # Writes (rows included) and reads go on while the reader holds the view.
        done: list[str] = []

        def writes() -> None:
            for session_id in ids:
                workload.report(session_id)
                done.append(session_id)

        writer = threading.Thread(target=writes, daemon=True)
        writer.start()
        writer.join(30)
        assert done == ids, "writes waited for the reader of the view"
        other = apps(postgres_url)
        assert Registry.of(other).get(NAME).live_table == old  # not taken over yet
        for session_id in ids:
            assert rows_on(other, old).row_version(session_id) == app.get_session(session_id).version
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # a read of the view, as GetSession's
            assert conn.execute(f"SELECT count(*) FROM {live_view(NAME)}").fetchone() == (len(ids),)
        assert taker.is_alive() and not took_over
        reader.rollback()  # the reader is done

    taker.join(30)
    assert took_over == [None]
    assert registry.get(NAME).live_table == building.table
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        defined = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (live_view(NAME),)).fetchone()
    assert defined is not None and building.table in defined[0]
    for session_id in ids:  # the writes during the wait are in the new live table too
        assert building.row_version(session_id) == app.get_session(session_id).version
