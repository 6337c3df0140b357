"""The session rows of the read model (``session_snapshots``): what a row
holds, and the queries on a table of them, written once for both backends
(projection.row_tables says how each runs them).

Both backends extend the library's tracking recorders, so that a batch of
row changes, the events parked in it and the new tracking position commit in
one transaction: a crash anywhere leaves either all or none, and each event
is applied exactly once.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking

from sessions.projection.listing import ACTIVE_SQL, ListedRow, PageQuery, page_sql

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
    def drop(self) -> None:
        """Drop the table, its parked events and its tracking."""

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
                f"SELECT session_id FROM {self.table} WHERE {ACTIVE_SQL} AND expires_at <= ? "
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
