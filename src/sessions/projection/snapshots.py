"""The session_snapshots read model's storage, one class per backend.

Both extend the library's tracking recorders, so that a batch of row changes
and the new tracking position commit in one transaction: a crash anywhere
leaves either both or neither, and each event is applied exactly once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from sessions.projection.listing import ListedRow, PageQuery, page_sql
from sessions.projection.schema import create_statements, table_name

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


@dataclass(frozen=True)
class SnapshotRow:
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


class SessionSnapshots:
    """Backend-neutral interface (implemented below for SQLite and PostgreSQL)."""

    table: str
    tracking_name: str

    def save(self, rows: Sequence[SnapshotRow], tracking: Tracking) -> None:
        raise NotImplementedError

    def resume_points(self, session_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """session_id -> (version, state) for the sessions that have rows."""
        raise NotImplementedError

    def get(self, session_id: str) -> ServedRow | None:
        raise NotImplementedError

    def list_newest(self, subject_container_id: str, limit: int) -> list[ServedRow]:
        raise NotImplementedError

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        """One ListSessions page (see ``projection.listing``)."""
        raise NotImplementedError

    def page_token_key(self) -> bytes:
        """The key that signs page tokens: created once per store, then read."""
        raise NotImplementedError

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        """OPENED sessions last seen at or before ``silent_since`` (micros)."""
        raise NotImplementedError

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        """OPENED or PENDING sessions whose expires_at is at or before ``now``."""
        raise NotImplementedError

    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]


class SQLiteSessionSnapshots(SQLiteTrackingRecorder, SessionSnapshots):
    def __init__(self, datastore: Any, *, at_version: int | None = None, **kwargs: Any):
        self.table = table_name(NAME, at_version)
        self.tracking_name = self.table
        super().__init__(datastore, **kwargs)
        placeholders = ",".join("?" * len(COLUMNS))
        updates = ",".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        self._upsert = (
            f"INSERT INTO {self.table} ({','.join(COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT(session_id) DO UPDATE SET {updates}"
        )

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *create_statements(NAME, "sqlite", self.table),
        ]

    def save(self, rows: Sequence[SnapshotRow], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(self._upsert, [r.values() for r in rows])
            self._insert_tracking(c, tracking)

    def resume_points(self, session_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        ids = list(session_ids)
        found: dict[str, tuple[int, bytes]] = {}
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                c.execute(
                    f"SELECT session_id, version, state FROM {self.table} "
                    f"WHERE session_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update({r[0]: (r[1], bytes(r[2])) for r in c.fetchall()})
        return found

    def get(self, session_id: str) -> ServedRow | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT session, status, expires_at FROM {self.table} WHERE session_id=?",
                (session_id,),
            )
            row = c.fetchone()
        return ServedRow(bytes(row[0]), row[1], row[2]) if row else None

    def list_newest(self, subject_container_id: str, limit: int) -> list[ServedRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT session, status, expires_at FROM {self.table} "
                "WHERE subject_container_id=? "
                "ORDER BY created_at DESC, session_id DESC LIMIT ?",
                (subject_container_id, limit),
            )
            return [ServedRow(bytes(r[0]), r[1], r[2]) for r in c.fetchall()]

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        built = page_sql(query, self.table, "?")
        if built is None:
            return []
        sql, params = built
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [ListedRow(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in c.fetchall()]

    def page_token_key(self) -> bytes:
        key: bytes | None = getattr(self, "_page_token_key", None)
        if key is None:
            table = f"{self.table}_page_token_key"
            with self.datastore.transaction(commit=True) as c:
                c.execute(
                    f"INSERT INTO {table} (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                    (secrets.token_bytes(32),),
                )
                c.execute(f"SELECT secret FROM {table} WHERE id = 1")
                key = bytes(c.fetchone()[0])
            self._page_token_key = key
        return key

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        return self._ids(
            f"SELECT session_id FROM {self.table} WHERE status = 1 AND last_seen_at <= ? "
            "ORDER BY last_seen_at LIMIT ?",
            (silent_since, limit),
        )

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        return self._ids(
            f"SELECT session_id FROM {self.table} WHERE status IN (1, 2) AND expires_at <= ? "
            "ORDER BY expires_at LIMIT ?",
            (now, limit),
        )

    def _ids(self, query: str, params: tuple[Any, ...]) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(query, params)
            return [r[0] for r in c.fetchall()]


class PostgresSessionSnapshots(PostgresTrackingRecorder, SessionSnapshots):
    def __init__(self, datastore: Any, *, at_version: int | None = None, **kwargs: Any):
        self.table = table_name(NAME, at_version)
        self.tracking_name = self.table
        super().__init__(datastore, **kwargs)
        table = Identifier(self.table)
        for statement in create_statements(NAME, "postgresql", self.table):
            self.sql_create_statements.append(SQL(statement))  # type: ignore[arg-type]
        self._upsert = SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) "
            "ON CONFLICT (session_id) DO UPDATE SET {updates}"
        ).format(
            table=table,
            columns=SQL(",").join(Identifier(c) for c in COLUMNS),
            values=SQL(",").join(SQL("%s") for _ in COLUMNS),
            updates=SQL(",").join(
                SQL("{c}=excluded.{c}").format(c=Identifier(c)) for c in COLUMNS[1:]
            ),
        )
        self._resume = SQL(
            "SELECT session_id, version, state FROM {table} WHERE session_id = ANY(%s)"
        ).format(table=table)
        self._get = SQL(
            "SELECT session, status, expires_at FROM {table} WHERE session_id = %s"
        ).format(table=table)
        self._due_to_stall = SQL(
            "SELECT session_id FROM {table} WHERE status = 1 AND last_seen_at <= %s "
            "ORDER BY last_seen_at LIMIT %s"
        ).format(table=table)
        self._due_to_expire = SQL(
            "SELECT session_id FROM {table} WHERE status IN (1, 2) AND expires_at <= %s "
            "ORDER BY expires_at LIMIT %s"
        ).format(table=table)
        self._list = SQL(
            "SELECT session, status, expires_at FROM {table} "
            "WHERE subject_container_id = %s "
            "ORDER BY created_at DESC, session_id DESC LIMIT %s"
        ).format(table=table)

    def save(self, rows: Sequence[SnapshotRow], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(self._upsert, [r.values() for r in rows])
            self._insert_tracking(curs, tracking)

    def resume_points(self, session_ids: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._resume, (list(session_ids),), prepare=True)
            return {
                r["session_id"]: (r["version"], bytes(r["state"])) for r in curs.fetchall()
            }

    def get(self, session_id: str) -> ServedRow | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._get, (session_id,), prepare=True)
            row = curs.fetchone()
        return ServedRow(bytes(row["session"]), row["status"], row["expires_at"]) if row else None

    def list_newest(self, subject_container_id: str, limit: int) -> list[ServedRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._list, (subject_container_id, limit), prepare=True)
            return [
                ServedRow(bytes(r["session"]), r["status"], r["expires_at"])
                for r in curs.fetchall()
            ]

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        built = page_sql(query, "{table}", "%s")
        if built is None:
            return []
        sql, params = built
        statement = SQL(sql).format(table=Identifier(self.table))  # type: ignore[arg-type]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return [
                ListedRow(
                    bytes(r["session"]), r["status"], r["expires_at"], r["created_at"], r["session_id"]
                )
                for r in curs.fetchall()
            ]

    def page_token_key(self) -> bytes:
        key: bytes | None = getattr(self, "_page_token_key", None)
        if key is None:
            table = Identifier(f"{self.table}_page_token_key")
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(
                    SQL(
                        "INSERT INTO {table} (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING"
                    ).format(table=table),
                    (secrets.token_bytes(32),),
                )
                curs.execute(SQL("SELECT secret FROM {table} WHERE id = 1").format(table=table))
                key = bytes(curs.fetchone()["secret"])
            self._page_token_key = key
        return key

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        return self._ids(self._due_to_stall, (silent_since, limit))

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        return self._ids(self._due_to_expire, (now, limit))

    def _ids(self, query: Any, params: tuple[Any, ...]) -> list[str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, params, prepare=True)
            return [r["session_id"] for r in curs.fetchall()]


def open_snapshots(app: Any, *, at_version: int | None = None) -> SessionSnapshots:
    """The read model's recorder on the application's own datastore (one pool,
    and for in-memory SQLite the only way to see the same database)."""
    factory = app.factory
    if app.settings.backend == "postgresql":
        recorder = PostgresSessionSnapshots(
            factory.datastore, tracking_table_name="sessions_tracking", at_version=at_version
        )
    else:
        recorder = SQLiteSessionSnapshots(factory.datastore, at_version=at_version)
    with app.schema_lock():
        recorder.create_table()
    return recorder
