"""GetSession's read of one row, on connections of its own.

GetSession is the hottest call and reads one row by its key, through the
live view (projection.registry), like every read: nothing is kept in
memory, so what it answers is what the database holds at that moment.
The library's general path (its pool, a transaction around the statement,
rows as dicts) costs several times the query itself there, so this read
takes a shorter way to the same statement:

- SQLite: one connection per serving thread (the gRPC pool's threads are
  fixed), in autocommit mode: the statement alone, no BEGIN/ROLLBACK.
- PostgreSQL: a small pool of autocommit connections, the statement
  prepared once on each and run through libpq (psycopg's ``pq`` layer) with
  binary results.

An in-memory SQLite store (``memory://``) keeps the library's path: its
connections must be the library's own.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from contextlib import suppress
from typing import Any

from eventsourcing.persistence import OperationalError

from sessions.projection.registry import live_view
from sessions.projection.rows import NAME, ServedRow

SELECT = f"SELECT session, status, expires_at FROM {live_view(NAME)} WHERE session_id = "


def point_reads(app: Any) -> Any | None:
    """The shorter path for this store, or None (use the library's)."""
    if app.settings.backend == "postgresql":
        return PostgresPointReads(app)
    pool = app.factory.datastore.pool
    if pool.is_sqlite_memory_mode:
        return None
    return SQLitePointReads(pool.db_name, pool.lock_timeout)


class SQLitePointReads:
    def __init__(self, db_name: str, lock_timeout: float | None):
        self.db_name = db_name
        self.timeout = lock_timeout or 5.0
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.sql = SELECT + "?"

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_name, uri=True, check_same_thread=False, isolation_level=None, timeout=self.timeout
            )
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def get(self, session_id: str) -> ServedRow | None:
        try:
            row = self._connection().execute(self.sql, (session_id,)).fetchone()
        except sqlite3.OperationalError as e:
            raise OperationalError(str(e)) from e
        return ServedRow(row[0], row[1], row[2]) if row is not None else None

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class PostgresPointReads:
    STATEMENT = b"sessions_get_session"

    def __init__(self, app: Any, size: int | None = None):
        self.settings = app.settings
        self.health = app.store_health
        self.size = size or int(app.settings.env.get("POSTGRES_POOL_SIZE", "8"))
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False
        self.sql = (SELECT + "$1").encode()

    def get(self, session_id: str) -> ServedRow | None:
        # A connection found broken (the server restarted, an idle
        # connection was cut) is replaced and the read made again, once: a
        # read changes nothing, so making it twice is safe.
        for attempt in (1, 2):
            conn = self._take()
            try:
                result = conn.pgconn.exec_prepared(self.STATEMENT, [session_id.encode()], None, 1)
            except Exception as e:  # noqa: BLE001 - the connection is gone
                self._discard(conn)
                if attempt == 2:
                    raise OperationalError(f"reading session {session_id!r}: {e}") from e
                continue
            if result.status == _TUPLES_OK:
                self._idle.put(conn)
                break
            error = (result.error_message or b"").decode(errors="replace").strip()
            if conn.pgconn.status == _CONNECTION_OK:
                self._idle.put(conn)
                raise OperationalError(f"reading session {session_id!r}: {error}")
            self._discard(conn)
            if attempt == 2:
                raise OperationalError(f"reading session {session_id!r}: {error}")
        if result.ntuples == 0:
            return None
        return ServedRow(
            result.get_value(0, 0),
            int.from_bytes(result.get_value(0, 1), "big", signed=True),
            int.from_bytes(result.get_value(0, 2), "big", signed=True),
        )

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._count < self.size
            if grow:
                self._count += 1
        if not grow:
            try:
                return self._idle.get(timeout=5.0)
            except queue.Empty:
                raise OperationalError("no connection for reads within 5s") from None
        try:
            conn = self._connect()
        except Exception as e:
            with self._lock:
                self._count -= 1
            self.health.failed(e)  # (said once, in the log, by the store's health)
            raise OperationalError(f"cannot connect for reads: {e}") from e
        self.health.ok()
        return conn

    def _connect(self) -> Any:
        conn = self.settings.connect_postgres(autocommit=True, application_name="sessions-reads")
        result = conn.pgconn.prepare(self.STATEMENT, self.sql, None)
        if result.status != _COMMAND_OK:
            error = (result.error_message or b"").decode(errors="replace").strip()
            conn.close()
            raise OperationalError(f"cannot prepare the read: {error}")
        return conn

    def _discard(self, conn: Any) -> None:
        with self._lock:
            self._count -= 1
        with suppress(Exception):  # it is broken already
            conn.close()

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            conn.close()


def _statuses() -> tuple[Any, Any, Any]:
    from psycopg import pq

    return pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ConnStatus.OK


_TUPLES_OK, _COMMAND_OK, _CONNECTION_OK = _statuses()
