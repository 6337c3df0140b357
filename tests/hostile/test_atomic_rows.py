"""Events and the rows written with them commit together or not at all, on
both backends, whatever fails in the rows' write: also an error raised in
the client (on PostgreSQL, while the write's one message is being rendered,
after the events' insert: nothing is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url


@pytest.fixture
def app(store_url: str) -> Iterator[SessionsApplication]:
    application = SessionsApplication(parse_store_url(store_url))
    yield application
    application.close()


class FailingWrite:
    """A write in the events' transaction that fails in the client."""

    order = "a"

    def write(self, cursor: Any) -> None:
        raise ValueError("this value cannot be sent")


class MarkerWrite:
    """A write in the events' transaction that succeeds (a table of its own)."""

    order = "b"

    def __init__(self, app: SessionsApplication):
        self.postgres = app.settings.backend == "postgresql"

    def write(self, cursor: Any) -> None:
        cursor.execute("INSERT INTO marker (n) VALUES (1)")


def _events(stream: str) -> list[StoredEvent]:
    return [StoredEvent(stream, v, "tests.Event", b'{"n": %d}' % v) for v in (1, 2)]


def _count(app: SessionsApplication, statement: str) -> int:
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
    return int(row[0] if not isinstance(row, dict) else next(iter(row.values())))


def test_a_failing_write_with_the_events_commits_nothing(app: SessionsApplication) -> None:
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS marker (n integer)")
    before = app.recorder.max_notification_id() or 0

    with pytest.raises(ValueError, match="cannot be sent"):
        app.recorder.insert_events(_events("s-1"), also=[MarkerWrite(app), FailingWrite()])

    assert (app.recorder.max_notification_id() or 0) == before
    assert app.recorder.select_events("s-1") == []
    assert _count(app, "SELECT COUNT(*) FROM marker") == 0

    # The same save without the failing write commits both.
    app.recorder.insert_events(_events("s-1"), also=[MarkerWrite(app)])
    assert [e.originator_version for e in app.recorder.select_events("s-1")] == [1, 2]
    assert _count(app, "SELECT COUNT(*) FROM marker") == 1
