"""The session_snapshots read model's storage.

Both backends extend the library's tracking recorders, so that a batch of
row changes, the events parked in it and the new tracking position commit in
one transaction: a crash anywhere leaves either all or none, and each event
is applied exactly once. The queries are written once; each backend only
says how to run them.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from sessions.projection.listing import ListedRow, PageQuery, page_sql
from sessions.projection.schema import create_statements

NAME = "session_snapshots"

COLUMNS = (
    "session_id",
    "subject_container_id",
    "session_type",
    "status",
    "sync_mode",
    "agent_id",
    "created_at",
    "expires_at",
    "closed_at",
    "last_seen_at",
    "version",
    "state",
    "session",
)
PARKED_COLUMNS = ("position", "stream", "version", "topic", "state", "error", "parked_at")


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    subject_container_id: str
    session_type: int
    status: int
    sync_mode: int
    agent_id: str
    created_at: int
    expires_at: int
    closed_at: int | None
    last_seen_at: int
    version: int
    state: bytes
    session: bytes

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)


@dataclass(frozen=True)
class ServedRow:
    """What a read needs: the stored session, plus what read-time expiry checks."""

    session: bytes
    status: int
    expires_at: int


@dataclass(frozen=True)
class ParkedEvent:
    """An event the fold could not apply, kept with its error until retried."""

    position: int
    stream: str
    version: int
    topic: str
    state: bytes
    error: str
    parked_at: int = 0

    def values(self) -> tuple[Any, ...]:
        return (
            self.position,
            self.stream,
            self.version,
            self.topic,
            self.state,
            self.error,
            self.parked_at or int(time.time()),
        )


# (a row the store refused, its error) -> the events to park instead
Refused = Callable[[SessionRow, str], list[ParkedEvent]]


class SessionRows(ABC):
    """The read model in one table (``table``), whatever the backend.

    Subclasses provide ``_rows`` (run a query, return tuples), ``_write``
    (a transaction's cursor) and ``_upsert_rows``; the SQL is shared, written
    with ``?`` placeholders.
    """

    table: str
    tracking_name: str
    mark = "?"

    # --- the backend's part -------------------------------------------------------

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; return its rows as tuples."""

    @abstractmethod
    def _write(self) -> Any:
        """A context manager giving a cursor inside one committed transaction."""

    def _run(self, cursor: Any, sql: str, params: Sequence[Any] = (), many: bool = False) -> None:
        sql = self._sql(sql)
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)

    def _upsert_rows(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        self._run(cursor, self._upsert, [r.values() for r in rows], many=True)

    def _sql(self, sql: str) -> Any:
        return sql.replace("?", self.mark) if self.mark != "?" else sql

    def _in(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``IN (...)`` for these values: the condition and its parameters."""
        return f"IN ({','.join('?' * len(values))})", list(values)

    # _insert_tracking() and max_tracking_id() come from the library's
    # tracking recorders, which each backend's class also extends.

    # --- shared -----------------------------------------------------------------------

    def _prepare(self, table: str) -> None:
        self.table = table
        self.tracking_name = table
        self.parked_table = f"{table}_parked"
        self.key_table = f"{NAME}_page_token_key"
        updates = ",".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        # Rows only move forward: the projector and writers (write_through)
        # may both write a session's row, in either order.
        self._upsert = (
            f"INSERT INTO {table} ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT (session_id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
        )

    def save(
        self,
        rows: Sequence[SessionRow],
        tracking: Tracking,
        parked: Sequence[ParkedEvent] = (),
        refused: Refused | None = None,
        check: Callable[[Any], None] | None = None,
    ) -> Sequence[ParkedEvent]:
        """Write a batch: its rows, its parked events and its position, in one
        transaction; return the events parked. With ``refused``, each row is
        written on its own (in a savepoint): a row the store refuses is left
        out, and the events that ``refused(row, error)`` returns are parked
        instead. ``check(cursor)`` runs first in the transaction and may
        refuse the whole batch by raising."""
        with self._write() as cursor:
            if check is not None:
                check(cursor)
            if rows and refused is not None:
                parked = [*parked, *self._upsert_each(cursor, rows, refused)]
            elif rows:
                self._upsert_rows(cursor, rows)
            if parked:
                self._park(cursor, parked)
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
        return parked

    def _upsert_each(
        self, cursor: Any, rows: Sequence[SessionRow], refused: Refused
    ) -> list[ParkedEvent]:
        parked: list[ParkedEvent] = []
        for row in rows:
            cursor.execute("SAVEPOINT one_row")
            try:
                self._upsert_rows(cursor, [row])
            except Exception as e:  # noqa: BLE001 - this row is parked instead
                cursor.execute("ROLLBACK TO SAVEPOINT one_row")
                parked += refused(row, f"the store refused the row: {type(e).__name__}: {e}")
            cursor.execute("RELEASE SAVEPOINT one_row")
        return parked

    def upsert_in(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        """Write rows in a transaction someone else runs (a command's)."""
        self._upsert_rows(cursor, rows)

    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]

    def resume_points(self, session_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """session_id -> (version, state) for the sessions that have rows."""
        ids = list(session_ids)
        found: dict[str, tuple[int, bytes]] = {}
        for start in range(0, len(ids), 500):
            condition, params = self._in(ids[start : start + 500])
            rows = self._rows(
                f"SELECT session_id, version, state FROM {self.table} WHERE session_id {condition}",
                params,
            )
            found.update({r[0]: (r[1], bytes(r[2])) for r in rows})
        return found

    def row_versions(self, session_ids: Iterable[str]) -> dict[str, int]:
        """session_id -> the version its row holds, for the sessions that have rows."""
        ids = list(session_ids)
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            condition, params = self._in(ids[start : start + 500])
            rows = self._rows(
                f"SELECT session_id, version FROM {self.table} WHERE session_id {condition}", params
            )
            found.update({r[0]: r[1] for r in rows})
        return found

    def get(self, session_id: str) -> ServedRow | None:
        rows = self._rows(
            f"SELECT session, status, expires_at FROM {self.table} WHERE session_id = ?",
            (session_id,),
        )
        return ServedRow(bytes(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        """One ListSessions page (see ``projection.listing``)."""
        built = page_sql(query, self.table, "?")
        if built is None:
            return []
        sql, params = built
        return [ListedRow(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in self._rows(sql, params)]

    def page_token_key(self) -> bytes:
        """The key that signs page tokens: created once per store, then read.
        It belongs to the read model, not to one build of it, so tokens stay
        valid across rebuilds."""
        key: bytes | None = getattr(self, "_page_token_key", None)
        if key is None:
            with self._write() as cursor:
                self._run(
                    cursor,
                    f"INSERT INTO {self.key_table} (id, secret) VALUES (1, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    (secrets.token_bytes(32),),
                )
            key = bytes(self._rows(f"SELECT secret FROM {self.key_table} WHERE id = 1")[0][0])
            self._page_token_key = key
        return key

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        """OPENED sessions last seen at or before ``silent_since`` (micros)."""
        return [
            r[0]
            for r in self._rows(
                f"SELECT session_id FROM {self.table} WHERE status = 1 AND last_seen_at <= ? "
                "ORDER BY last_seen_at LIMIT ?",
                (silent_since, limit),
            )
        ]

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        """OPENED or PENDING sessions whose expires_at is at or before ``now``."""
        return [
            r[0]
            for r in self._rows(
                f"SELECT session_id FROM {self.table} WHERE status IN (1, 2) AND expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            )
        ]

    def session_ids(self, batch: int = 5000) -> Iterator[str]:
        """Every session with a row, in id order."""
        after = ""
        while True:
            rows = self._rows(
                f"SELECT session_id FROM {self.table} WHERE session_id > ? "
                "ORDER BY session_id LIMIT ?",
                (after, batch),
            )
            if not rows:
                return
            yield from (r[0] for r in rows)
            after = rows[-1][0]

    def row_version(self, session_id: str) -> int | None:
        rows = self._rows(f"SELECT version FROM {self.table} WHERE session_id = ?", (session_id,))
        return rows[0][0] if rows else None

    # --- parked events -----------------------------------------------------------

    def _park(self, cursor: Any, parked: Sequence[ParkedEvent]) -> None:
        self._run(
            cursor,
            f"INSERT INTO {self.parked_table} ({','.join(PARKED_COLUMNS)}) "
            f"VALUES ({','.join('?' * len(PARKED_COLUMNS))}) "
            "ON CONFLICT (position) DO UPDATE SET error = excluded.error",
            [p.values() for p in parked],
            many=True,
        )

    def parked(self) -> list[ParkedEvent]:
        rows = self._rows(
            f"SELECT {','.join(PARKED_COLUMNS)} FROM {self.parked_table} ORDER BY position"
        )
        return [ParkedEvent(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def parked_count(self) -> int:
        return int(self._rows(f"SELECT COUNT(*) FROM {self.parked_table}")[0][0])

    def unpark(self, rows: Sequence[SessionRow], applied: Sequence[int], still: Sequence[ParkedEvent]) -> None:
        """After a retry: write the rows, forget the applied events, and record
        the new errors of those still failing, in one transaction."""
        with self._write() as cursor:
            if rows:
                self._upsert_rows(cursor, rows)
            if applied:
                self._run(
                    cursor,
                    f"DELETE FROM {self.parked_table} WHERE position = ?",
                    [(p,) for p in applied],
                    many=True,
                )
            if still:
                self._park(cursor, still)


class SQLiteSessionRows(SQLiteTrackingRecorder, SessionRows):
    def __init__(self, datastore: Any, *, table: str, **kwargs: Any):
        self._prepare(table)
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *create_statements(NAME, "sqlite", self.table),
        ]

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [tuple(r) for r in c.fetchall()]

    def _write(self) -> Any:
        return self.datastore.transaction(commit=True)

    def exists(self) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                (self.table, self.parked_table),
            )
            return int(c.fetchone()[0]) == 2

    def drop(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            for table in (self.parked_table, self.table):
                c.execute(f"DROP TABLE IF EXISTS {table}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (self.tracking_name,))


class PostgresSessionRows(PostgresTrackingRecorder, SessionRows):
    mark = "%s"
    BULK = 200  # rows from which a batch is written with COPY

    def __init__(self, datastore: Any, *, table: str, **kwargs: Any):
        self._prepare(table)
        super().__init__(datastore, **kwargs)
        for statement in create_statements(NAME, "postgresql", self.table):
            self.sql_create_statements.append(SQL(statement))  # type: ignore[arg-type]

    def _in(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        # One array parameter: the statement is the same whatever the length.
        return "= ANY(?)", [list(values)]

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._sql(sql), params, prepare=True)
            return [tuple(r.values()) for r in curs.fetchall()]

    def _write(self) -> Any:
        return self.datastore.transaction(commit=True)

    def _upsert_rows(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        if len(rows) < self.BULK:
            super()._upsert_rows(cursor, rows)
            return
        # Large batches (catching up, rebuilding): COPY into a temporary
        # table, then one INSERT ... ON CONFLICT from it.
        cursor.execute(
            SQL("CREATE TEMPORARY TABLE IF NOT EXISTS snapshot_batch (LIKE {table}) ON COMMIT DELETE ROWS").format(
                table=Identifier(self.table)
            )
        )
        with cursor.copy(
            SQL("COPY snapshot_batch ({columns}) FROM STDIN").format(
                columns=SQL(",").join(Identifier(c) for c in COLUMNS)
            )
        ) as copy:
            for row in rows:
                copy.write_row(row.values())
        cursor.execute(
            SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM snapshot_batch "
                "ORDER BY session_id "
                "ON CONFLICT (session_id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
            ).format(
                table=Identifier(self.table),
                columns=SQL(",").join(Identifier(c) for c in COLUMNS),
                updates=SQL(",").join(
                    SQL("{c}=excluded.{c}").format(c=Identifier(c)) for c in COLUMNS[1:]
                ),
            )
        )

    def drop(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for table in (self.parked_table, self.table):
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(Identifier(table)))
            curs.execute(
                SQL("DELETE FROM {0} WHERE application_name = %s").format(
                    Identifier(self.tracking_table_name)
                ),
                (self.tracking_name,),
            )


def rows_on(app: Any, table: str) -> SessionRows:
    """The read model in ``table``, on the application's own datastore (one
    pool, and for in-memory SQLite the only way to see the same database);
    its tables are created if they are not there."""
    recorder = rows_named(app, table)
    if isinstance(recorder, SQLiteSessionRows) and recorder.exists():
        return recorder
    with app.schema_lock():
        _create(recorder)
    return recorder


def rows_named(app: Any, table: str) -> SessionRows:
    """The read model in ``table``, which exists (nothing is created: this
    may run inside another transaction)."""
    datastore = app.factory.datastore
    if app.settings.backend == "postgresql":
        return PostgresSessionRows(
            datastore, table=table, tracking_table_name=f"{app.name}_tracking"
        )
    return SQLiteSessionRows(datastore, table=table)


def live_rows(app: Any) -> SessionRows:
    """Reads of the live read model, through the view the registry keeps on
    the live table (see projection.registry)."""
    from sessions.projection.registry import live_view

    return rows_named(app, live_view(NAME))


def _create(recorder: Any, attempts: int = 20) -> None:
    """Create the tables. SQLite refuses a schema change at once (no busy
    wait) while another connection writes; such a refusal is retried. Two
    processes creating the same tables at once on SQLite (there is no
    schema lock there) collide on the library's migration record: the
    other one made them, which is checked."""
    from eventsourcing.persistence import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            recorder.create_table()
            return
        except IntegrityError:
            if isinstance(recorder, SQLiteSessionRows) and recorder.exists():
                return
            raise
        except OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def open_rows(app: Any) -> SessionRows:
    """The live read model, as the registry names it."""
    from sessions.projection.registry import Registry

    return rows_on(app, Registry.of(app).get(NAME).live_table)
