"""Group commit (store.recorders): saves that queue up while another commits
are written together, in one transaction, on both backends; a conflict in
a group fails only the save that caused it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url
from tests.waiting import wait_until


@pytest.fixture
def app(store_url: str) -> Iterator[SessionsApplication]:
    application = SessionsApplication(parse_store_url(store_url))
    yield application
    application.close()


def event(stream: str, version: int) -> StoredEvent:
    return StoredEvent(stream, version, "tests.Event", f'{{"n": {version}}}'.encode())


class Writers:
    """Threads each inserting their events (with their keyword arguments),
    held back until all are queued, so that one commit takes them all."""

    def __init__(self, recorder: Any, saves: list[list[StoredEvent]], kwargs: dict[int, Any] | None = None):
        self.recorder = recorder
        self.results: dict[int, Any] = {}
        self.threads = [
            threading.Thread(target=self._insert, args=(k, events, (kwargs or {}).get(k, {})))
            for k, events in enumerate(saves)
        ]

    def _insert(self, k: int, events: list[StoredEvent], kwargs: dict[str, Any]) -> None:
        try:
            self.results[k] = self.recorder.insert_events(events, **kwargs)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            self.results[k] = e

    def run_queued(self) -> None:
        recorder = self.recorder
        with commit_in_progress(recorder):  # nobody commits until all are queued
            for t in self.threads:
                t.start()
            assert wait_until(lambda: len(recorder._queue) == len(self.threads), timeout=10)
        for t in self.threads:
            t.join(10)


@contextmanager
def commit_in_progress(recorder: Any) -> Iterator[None]:
    """As if some other save were committing: the saves made meanwhile queue."""
    with recorder._turns:
        recorder._committing = True
    try:
        yield
    finally:
        recorder._pass_turn()  # to the first save queued meanwhile


class Failing:
    """A write in the events' transaction that the database refuses."""

    order = "x"

    def write(self, cursor: Any) -> None:
        cursor.execute("SELECT no_such_column FROM no_such_table")


def test_queued_saves_commit_together_with_their_own_ids(app: SessionsApplication) -> None:
    recorder = app.recorder
    saves = [[event(f"stream-{k}", 1), event(f"stream-{k}", 2)] for k in range(8)]
    commits_before = recorder.group_sizes.commits
    writers = Writers(recorder, saves)
    writers.run_queued()

    assert recorder.group_sizes.commits == commits_before + 1
    assert recorder.group_sizes.largest == 8
    # Each caller got the ids of its own events, and they are what the store holds.
    stored = {
        (n.originator_id, n.originator_version): n.id
        for n in recorder.select_notifications(start=1, limit=100)
    }
    for k in range(8):
        ids = writers.results[k]
        assert ids == [stored[(f"stream-{k}", 1)], stored[(f"stream-{k}", 2)]]
    assert len(stored) == 16


def test_a_conflict_in_a_group_fails_only_its_own_save(app: SessionsApplication) -> None:
    recorder = app.recorder
    recorder.insert_events([event("taken", 1)])
    saves = [[event("a", 1)], [event("taken", 1)], [event("b", 1), event("b", 2)]]
    writers = Writers(recorder, saves)
    writers.run_queued()

    assert isinstance(writers.results[1], IntegrityError)
    assert len(writers.results[0]) == 1
    assert len(writers.results[2]) == 2
    stored = [(n.originator_id, n.originator_version) for n in recorder.select_notifications(start=1, limit=100)]
    assert sorted(stored) == [("a", 1), ("b", 1), ("b", 2), ("taken", 1)]


def test_rows_written_with_a_group_commit_or_roll_back_with_it(app: SessionsApplication) -> None:
    """What a save carries in ``also`` is written in the events' transaction:
    a failing write takes the events with it, and the others' still land."""

    class Noted:
        order = "y"
        written = False

        def write(self, cursor: Any) -> None:
            Noted.written = True

    recorder = app.recorder
    with pytest.raises(Exception):  # noqa: B017,PT011 - the backend's own error
        recorder.insert_events([event("rolled-back", 1)], also=[Failing()])
    recorder.insert_events([event("kept", 1)], also=[Noted()])

    stored = [n.originator_id for n in recorder.select_notifications(start=1, limit=100)]
    assert stored == ["kept"]
    assert Noted.written


class FailingInTheClient:
    """A write that fails in this process, before sending anything (on
    PostgreSQL after the events' insert has been rendered into the write's
    message)."""

    order = "x"

    def write(self, cursor: Any) -> None:
        raise RuntimeError("a value that cannot be sent")


def test_a_write_failing_in_the_client_takes_the_events_with_it(app: SessionsApplication) -> None:
    recorder = app.recorder
    with pytest.raises(RuntimeError, match="cannot be sent"):  # the write's own error
        recorder.insert_events([event("rolled-back", 1)], also=[FailingInTheClient()])
    recorder.insert_events([event("kept", 1)], also=[])

    stored = [n.originator_id for n in recorder.select_notifications(start=1, limit=100)]
    assert stored == ["kept"]


def test_a_failing_write_in_a_group_fails_only_its_own_save(app: SessionsApplication) -> None:
    recorder = app.recorder
    saves = [[event("first", 1)], [event("bad", 1)], [event("third", 1)]]
    writers = Writers(recorder, saves, kwargs={1: {"also": [Failing()]}})
    writers.run_queued()

    assert isinstance(writers.results[1], Exception)
    assert len(writers.results[0]) == 1 and len(writers.results[2]) == 1
    stored = sorted(n.originator_id for n in recorder.select_notifications(start=1, limit=100))
    assert stored == ["first", "third"]


def test_many_writers_each_get_their_own_ids_and_nothing_is_lost(app: SessionsApplication) -> None:
    # Free-running writers: turns pass from committer to queued writer
    # while others keep arriving; every save lands once, with its own ids.
    recorder = app.recorder
    threads, per_thread = 8, 30
    results: dict[tuple[int, int], Any] = {}
    start = threading.Barrier(threads)

    def write(k: int) -> None:
        start.wait()
        for n in range(per_thread):
            results[(k, n)] = recorder.insert_events([event(f"w{k}-{n}", 1), event(f"w{k}-{n}", 2)])

    workers = [threading.Thread(target=write, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not any(t.is_alive() for t in workers)

    stored = {
        (n.originator_id, n.originator_version): n.id
        for n in recorder.select_notifications(start=1, limit=10_000)
    }
    assert len(stored) == threads * per_thread * 2
    for (k, n), ids in results.items():
        assert ids == [stored[(f"w{k}-{n}", 1)], stored[(f"w{k}-{n}", 2)]]
    assert recorder.group_sizes.saves == threads * per_thread
    assert not recorder._committing and not recorder._queue
