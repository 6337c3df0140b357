"""A write refused by the server in the middle of its transaction (its
table lock, by a statement timeout) leaves its pooled connection usable,
with nothing believed prepared that the server does not have (psycopg
prepares a statement automatically at its 6th use; a write is one message
of the simple protocol, never prepared: store.recorders)."""

from __future__ import annotations

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url


def event(stream: str) -> StoredEvent:
    return StoredEvent(stream, 1, "tests.Event", b'{"n": 1}')


@pytest.mark.postgres
def test_a_write_refused_by_a_timeout_leaves_the_connection_usable(postgres_url: str) -> None:
    # One connection in the pool, so that every write uses it; a statement
    # waiting on a lock is cancelled after 300 ms (the library's own
    # lock_timeout is off).
    url = f"{postgres_url}?pool_size=1&max_overflow=0&options=-c%20statement_timeout%3D300"
    app = SessionsApplication(parse_store_url(url))
    try:
        recorder = app.recorder
        # Five writes before (a statement used a 6th time would be prepared
        # automatically, and the refused write below is retried several times).
        for k in range(5):
            recorder.insert_events([event(f"before-{k}")])
        with psycopg.connect(postgres_url) as holder:  # another process's lock
            holder.execute(
                SQL("LOCK TABLE {0} IN EXCLUSIVE MODE").format(Identifier(recorder.events_table_name))
            )
            with pytest.raises(Exception, match="statement timeout"):  # noqa: PT011 - the store's own error
                recorder.insert_events([event("refused")])
            holder.rollback()
        # What psycopg believes prepared on the connection is prepared there
        # (its private cache: a wrong belief fails some later write, which
        # one depending on what clears the cache meanwhile).
        with app.factory.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            believed = set(conn._prepared._names.values())
            on_server = {
                r["name"].encode()
                for r in conn.execute("SELECT name FROM pg_prepared_statements", prepare=False).fetchall()
            }
        assert believed <= on_server, (believed, on_server)
        for k in range(8):
            recorder.insert_events([event(f"after-{k}")])
        stored = sorted(n.originator_id for n in recorder.select_notifications(start=1, limit=100))
        assert stored == sorted([f"before-{k}" for k in range(5)] + [f"after-{k}" for k in range(8)])
    finally:
        app.close()
