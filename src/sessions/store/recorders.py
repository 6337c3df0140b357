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
``APPLICATION_RECORDER_TOPIC`` setting), not beside them: the tables, the
lock and the notification ids stay the library's. On PostgreSQL a write is
sent as one message (``PostgresSessionsRecorder``), its insert the library's
with one array per column.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg import ClientCursor, pq
from psycopg.sql import SQL, Composable, Identifier

from sessions.store.health import connection_lost


class InTransaction(Protocol):
    """Something to write in the events' own transaction, after the events'
    insert. On PostgreSQL ``write`` is given a cursor that renders what it
    executes into the write's one message: it can read no answer (the
    server decides what depends on the database). It may also have
    ``merged_with(other) -> InTransaction | None``: one write doing both,
    for the saves of a group (None: they cannot be combined)."""

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
        if not stored_events:
            return self._insert_one(stored_events, kwargs)
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
    """The library's recorder, each write (a group commit's) sent as one
    message that the server runs as one transaction.

    The library's write takes two round trips: it locks the events table and
    inserts, waits for the insert's answer, then commits; and in a pipeline
    each statement is flushed as it is executed. Every writer waits for that
    lock, so whatever the writing process does while it holds it (build and
    send the next statement; wake up when an answer comes, which in a busy
    process means waiting for the interpreter lock) is time in which no
    other process can write: the section under the lock bounds the write
    rate of all processes together. Here the same statements (the library's
    lock, NOTIFY and insert, then the writes that commit with the events)
    are rendered with their values and sent in one simple-protocol message,
    which the server runs as one implicit transaction, committed at its end:
    the lock is held only while the server runs them and flushes the commit,
    and the client plays no part in between. The writes that commit with the
    events must need no answer from the server (the rows' write reads the
    registry in the server: projection.row_tables.write_rows). If any
    statement fails, none of them commits; if rendering a value fails in the
    client, nothing was sent."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.datastore.enable_db_functions:
            # The library's insert through a database function writes the
            # events alone, not what commits with them.
            # (The application pins the setting off: see store.urls.)
            raise ValueError("PostgresSessionsRecorder needs POSTGRES_ENABLE_DB_FUNCTIONS off")
        self._init_group_commit()
        # The library's statements, rendered once. Its insert takes the
        # events as one array per column here, rather than one array of its
        # composite type (which psycopg renders in Python, field by field).
        # Same table, columns, order and RETURNING.
        before = [*self.lock_table_statements, SQL("NOTIFY {0}").format(Identifier(self.channel_name))]
        self._before_insert = b"; ".join(_rendered(s) for s in before)
        self._insert_result = len(before)  # the insert's result comes after theirs
        self._insert_statement = _rendered(
            SQL(
                "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) "
                "RETURNING notification_id"
            ).format(
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
                id_type=SQL(self.datastore.originator_id_type),
            )
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # (as the library's insert_events)
    def _insert_one(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> Sequence[int] | None:
        unexpected = sorted(k for k, v in kwargs.items() if k != "also" and v is not None)
        if unexpected:
            # (the library's application recorder writes no other: a tracked
            # write is a process recorder's, which this is not)
            raise TypeError(f"unexpected arguments for a write: {unexpected}")
        if not events:
            return None
        columns = (
            [e.originator_id for e in events],
            [e.originator_version for e in events],
            [e.topic for e in events],
            [e.state for e in events],
        )
        with self.datastore.get_connection() as conn:
            if not conn.autocommit:  # (the library's pool's: the message must be its own transaction)
                raise ProgrammingError("a write needs a connection in autocommit")
            statements = _Rendering(conn)
            statements.execute(self._insert_statement, columns)
            for extra in kwargs.get("also", ()):
                extra.write(statements)
            with conn.cursor() as curs:
                # (no parameters: the simple protocol, which takes several
                # statements in one message)
                curs.execute(b"; ".join([self._before_insert, *statements.rendered]))
                for _ in range(self._insert_result):  # the results before the insert's
                    curs.nextset()
                if not (curs.statusmessage or "").startswith("INSERT"):
                    raise ProgrammingError(f"the insert's result was expected, not {curs.statusmessage!r}")
                return [row["notification_id"] for row in curs.fetchall()]


class _Rendering:
    """A cursor's ``execute`` that renders the statement with its values
    instead of sending it.

    The statements of a write take arrays (one per column) of None, int,
    str and bytes: each array is written as PostgreSQL's array text (each
    element quoted, its backslashes and double quotes escaped), and that
    text made a string literal by libpq itself (PQescapeLiteral, with the
    connection's encoding and settings), so that whatever an element holds
    stays inside its literal. psycopg's client-side binding (mogrify) does
    the same for any value, about 5 times slower for these (its list
    dumpers are Python); it renders anything else."""

    def __init__(self, conn: Any):
        self._conn = conn
        self._encoding = conn.info.encoding
        self._escaping = pq.Escaping(conn.pgconn)
        self.rendered: list[bytes] = []

    def execute(self, statement: Any, params: Sequence[Any] | None = None) -> None:
        literals = [self._array(p) for p in params or ()]
        parts = statement.split(b"%s") if isinstance(statement, bytes) else []
        if params and None not in literals and len(parts) == len(literals) + 1:
            pieces = [parts[0]]
            for literal, part in zip(literals, parts[1:], strict=True):
                pieces += [literal, part]  # type: ignore[list-item]
            self.rendered.append(b"".join(pieces))
            return
        self.rendered.append(ClientCursor(self._conn).mogrify(statement, params).encode(self._encoding))

    def _array(self, values: Any) -> bytes | None:
        """``values`` (a list) as a string literal of PostgreSQL's array
        text; None if it holds another kind of value."""
        if not isinstance(values, list):
            return None
        elements = []
        for v in values:
            if v is None:
                elements.append("NULL")
            elif isinstance(v, str):
                elements.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
            elif isinstance(v, bytes):
                elements.append('"\\\\x' + v.hex() + '"')
            elif isinstance(v, int) and not isinstance(v, bool):
                elements.append(str(v))
            else:
                return None
        text = "{" + ",".join(elements) + "}"
        return self._escaping.escape_literal(text.encode(self._encoding))


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
