"""The application's recorders: the library's, plus two things it lacks.

**Group commit.** The library writes each save in a transaction of its own,
and on PostgreSQL each one locks the events table until it commits, so
concurrent commands take turns paying for a commit each. Here a save that
arrives while another is committing waits in a queue; the next writer to
get the commit turn takes the whole queue and writes it in one transaction
(one lock, one WAL flush). A lone writer never waits for company. If the
combined write fails (say, some command lost an optimistic-concurrency
race and broke a uniqueness constraint), each save of the group is written
again on its own, so that only the one at fault sees the error.

**Writes that commit with the events.** A save may carry ``also=[...]``:
objects with a ``write(cursor)`` method, run in the events' transaction after
the events are inserted (the read model's rows; see
``projection.write_through``). Either all of it commits or none.

Both are on top of the library's recorders (selected through its
``APPLICATION_RECORDER_TOPIC`` setting), not beside them: the SQL, locking
and notification ids stay the library's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.errors import RaiseException
from psycopg.sql import SQL, Composable, Identifier

from sessions.store.health import connection_lost


class InTransaction(Protocol):
    """Something to write in the events' own transaction. It may also have
    ``merged_with(other) -> InTransaction | None``: one write doing both,
    for the saves of a group (None: they cannot be combined); and
    ``read_first(cursor)``: on PostgreSQL, given a cursor of the
    transaction after the events' insert is sent, to send there what
    ``write`` will read (its answer comes with the insert's)."""

    order: str  # writes of a group go in this order

    def write(self, cursor: Any) -> None: ...


class _Save:
    """One caller's save, waiting for its turn (or for someone else's)."""

    __slots__ = ("done", "error", "events", "ids", "kwargs", "wake")

    def __init__(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]):
        self.events = events
        self.kwargs = kwargs
        self.done = False
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        # Released once, for a caller that queued: when its save is done, or
        # when the commit turn passes to it.
        self.wake = threading.Lock()
        self.wake.acquire()


class CommitObserver(Protocol):
    """Told what was committed (metrics): each commit's number of saves, and
    the events of each save that committed."""

    def group_committed(self, saves: int) -> None: ...

    def events_appended(self, events: Sequence[StoredEvent]) -> None: ...


class GroupCommit:
    """Mixed into a library recorder, before it in the bases."""

    def _init_group_commit(self) -> None:
        self._queue: list[_Save] = []
        self._committing = False  # someone holds the commit turn
        self._turns = threading.Lock()  # guards the queue and the turn
        self.group_sizes = _GroupSizes()
        self.observer: CommitObserver | None = None

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if kwargs.get("tracking") is not None or not stored_events:
            # A tracked write (a process application's) stays on its own.
            ids = self._insert_one(stored_events, kwargs)
            if self.observer is not None:
                self.observer.events_appended(stored_events)
            return ids
        save = _Save(stored_events, kwargs)
        with self._turns:
            self._queue.append(save)
            queued = self._committing
            self._committing = True
        if queued:
            # Each caller is woken exactly once (not the whole queue at every
            # commit): its save is done, or it is its turn to commit.
            save.wake.acquire()
        if not save.done:
            self._commit_queued()
        if save.error is not None:
            raise save.error
        if self.observer is not None:
            self.observer.events_appended(stored_events)
        return save.ids

    def _commit_queued(self) -> None:
        """With the commit turn: commit every save queued, this caller's first."""
        with self._turns:
            group, self._queue = self._queue, []
        try:
            self._commit(group)
        finally:
            for save in group[1:]:
                if not save.done:  # (only if _commit itself broke)
                    save.error, save.done = RuntimeError("group commit failed"), True
                save.wake.release()
            self._pass_turn()

    def _pass_turn(self) -> None:
        """Give the commit turn to the first save queued, if any."""
        with self._turns:
            if not self._queue:
                self._committing = False
                return
            first = self._queue[0]
        first.wake.release()

    def _commit(self, group: list[_Save]) -> None:
        self.group_sizes.add(len(group))
        if self.observer is not None:
            self.observer.group_committed(len(group))
        if len(group) == 1:
            self._commit_alone(group[0])
            return
        events = [e for save in group for e in save.events]
        # Rows in one order (their key), as the projector writes them, so
        # that two transactions never wait for each other's rows.
        also = _combined(sorted((w for save in group for w in save.kwargs.get("also", ())), key=_order))
        try:
            ids = self._insert_one(events, {"also": also})
        except Exception as e:  # noqa: BLE001 - each save again on its own
            if connection_lost(e):
                # Whether the group committed is unknown. Each caller is
                # told, and finds out by looking (see
                # SessionsApplication._execute_locked), rather than wait
                # here while each save of the group is tried again alone.
                for save in group:
                    save.error, save.done = e, True
                return
            # Nothing of the group committed; written alone, only the save
            # at fault (an optimistic-concurrency loser, say) fails.
            for save in group:
                self._commit_alone(save)
            return
        except BaseException as e:  # handed to every caller of the group
            for save in group:
                save.error, save.done = e, True
            return
        start = 0
        for save in group:
            end = start + len(save.events)
            save.ids = ids[start:end] if ids is not None else None
            save.done = True
            start = end

    def _commit_alone(self, save: _Save) -> None:
        try:
            save.ids = self._insert_one(save.events, save.kwargs)
        except BaseException as e:  # handed to its caller
            save.error = e
        save.done = True

    def _insert_one(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> Sequence[int] | None:
        return super().insert_events(events, **kwargs)  # type: ignore[misc]


class _GroupSizes:
    """How many saves each commit carried (for benchmarks and tests)."""

    def __init__(self) -> None:
        self.commits = 0
        self.saves = 0
        self.largest = 0

    def add(self, size: int) -> None:
        self.commits += 1
        self.saves += size
        self.largest = max(self.largest, size)


def _order(extra: Any) -> str:
    return str(getattr(extra, "order", ""))


def _combined(writes: list[Any]) -> list[Any]:
    """A group's writes, those that can go as one write combined (into the
    first of them: the order stays that of the first write of each kind)."""
    out: list[Any] = []
    for write in writes:
        for k, earlier in enumerate(out):
            merge = getattr(earlier, "merged_with", None)
            both = merge(write) if merge is not None else None
            if both is not None:
                out[k] = both
                break
        else:
            out.append(write)
    return out


def _write_also(cursor: Any, kwargs: dict[str, Any]) -> None:
    for extra in kwargs.get("also", ()):
        extra.write(cursor)


class PostgresSessionsRecorder(GroupCommit, PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.datastore.enable_db_functions:
            # The library's insert through a database function runs none of
            # the recorder's steps (_insert_events): the rows would not be
            # written with the events.
            # (The application pins the setting off: see store.urls.)
            raise ValueError("PostgresSessionsRecorder needs POSTGRES_ENABLE_DB_FUNCTIONS off")
        self._init_group_commit()
        self._failed_in_client = threading.local()
        # The library's statements of every write, rendered to bytes once:
        # psycopg renders a composed statement again at every execute.
        self.lock_table_statements = [_rendered(s) for s in self.lock_table_statements]
        self.insert_events_statement = _rendered(self.insert_events_statement)
        self._notify_statement = _rendered(SQL("NOTIFY {0}").format(Identifier(self.channel_name)))

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        # The library's steps (lock the table, notify, insert; the lock first,
        # so that writers take their locks in one order: table, then rows);
        # then what the writes will read (read_first), sent with the insert,
        # so that its answer comes back in the round trip the library makes
        # for the insert's. Every statement of the transaction is sent with
        # prepare=True or False, never psycopg's automatic prepare (None): in
        # pipeline mode, a statement prepared automatically (at its 6th use)
        # is recorded as prepared before the server's answer, and never
        # checked; if an earlier statement fails (a lock or statement
        # timeout, a cancel), the server skips the prepare, and every later
        # write on the pooled connection would use a statement that does not
        # exist. With True, psycopg checks the answer and forgets a failed
        # prepare; with False, it never prepares. (The library's lock is
        # prepare=True; its insert is not, hence the insert here.)
        self._lock_table(curs)
        self._notify_channel(curs)
        with self._failing_the_transaction(curs):
            events = [
                self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
                for e in stored_events
            ]
            curs.execute(self.insert_events_statement, (events,), prepare=True)
            for extra in kwargs.get("also", ()):
                read_first = getattr(extra, "read_first", None)
                if read_first is not None:
                    read_first(curs.connection.cursor())

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # After the insert's round trip (a collision has been raised by
        # then): the writes, sent with the COMMIT.
        with self._failing_the_transaction(curs):
            ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
            _write_also(curs, kwargs)
        return ids

    @contextmanager
    def _failing_the_transaction(self, curs: Any) -> Iterator[None]:
        """Around every step that runs in the client once the events' insert
        may have been sent. The library catches what is raised after its
        insert and raises it again once the transaction has exited, which
        commits unless the server failed the transaction: an error the
        server raises (a refused row) rolls back everything, and one raised
        here in the client (say, a value psycopg cannot send, or a read the
        library finds wrong) is made the server's by a statement the server
        refuses, so that the events never commit without their rows, nor
        with an error for an answer."""
        try:
            yield
        except BaseException as e:
            if getattr(e, "sqlstate", None):
                raise  # the server's: it failed the transaction already
            curs.execute(_FAIL_TRANSACTION, prepare=False)
            self._failed_in_client.error = e  # what the caller is told (_insert_one)
            raise

    def _insert_one(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> Sequence[int] | None:
        self._failed_in_client.error = None
        try:
            return super()._insert_one(events, kwargs)
        except Exception as e:
            failed, self._failed_in_client.error = self._failed_in_client.error, None
            if failed is not None and failed is not e and _refused_do(e):
                raise failed from e  # the write's own error, not the refused DO's
            raise  # (the store's own error: a collision, a lost connection)

    def _notify_channel(self, curs: Any) -> None:
        curs.execute(self._notify_statement, prepare=True)  # (see _insert_stored_events)


# A statement the server refuses, failing the transaction it runs in.
_FAILED_IN_THE_CLIENT = "the writes that commit with these events failed in the client"
_FAIL_TRANSACTION = f"DO $$BEGIN RAISE EXCEPTION '{_FAILED_IN_THE_CLIENT}'; END$$".encode()


def _refused_do(error: BaseException) -> bool:
    """Whether ``error`` is (or wraps) the server's refusal of _FAIL_TRANSACTION."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, RaiseException) and _FAILED_IN_THE_CLIENT in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _rendered(statement: Any) -> Any:
    """A composed statement as the bytes it renders to (identifiers quoted
    as psycopg quotes them; placeholders kept)."""
    return statement.as_bytes(None) if isinstance(statement, Composable) else statement


class SQLiteSessionsRecorder(GroupCommit, SQLiteApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_group_commit()

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        _write_also(c, kwargs)
        return ids
