"""The library's PostgreSQL infrastructure, with a connection pool that rides
out an outage.

The library builds a psycopg_pool pool from its settings. Left as it is,
an outage goes badly three ways:

- its reconnection backoff doubles without bound (1, 2, 4, 8... s), so the
  service comes back about as long after the store as the store was away;
- a call waits for a connection for the pool's whole timeout (5 s, as long
  as a typical client deadline), and the library retries that ten times:
  clients see DEADLINE_EXCEEDED, never UNAVAILABLE;
- the connections in the pool are dead after an outage, and each is found
  out by a call that fails on it.

So here, selected through the library's PERSISTENCE_MODULE setting (a
factory class topic), the factory builds the same pool from the same
settings as a ``StorePool``, which

- reconnects at most ``RECONNECT_DELAY_MAX`` apart, the backoff otherwise
  the library's;
- tells the store's health (store.health) when a connection cannot be made
  and when one can again; while the store is down a call takes a
  connection only if one is ready and otherwise fails at once with
  StoreUnavailable (which the library does not retry), one call at a time
  making a connection attempt first (also after the pool has given up
  reconnecting on its own, after ``reconnect_timeout``);
- when a connection breaks, asks at once whether the store is there (one
  connection attempt) and replaces every idle connection.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import suppress
from typing import Any

from eventsourcing.postgres import ConnectionPool, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg_pool import PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from sessions.store.health import StoreHealth, StoreUnavailable

RECONNECT_DELAY_MAX = 0.5  # s between connection attempts while the store is away
PROBE_TIMEOUT = 1  # s for the attempt made when a connection breaks (libpq's minimum)
PROBE_INTERVAL = 0.5  # s during which one such attempt answers for the others
WAIT_SLICE = 0.2  # s: a call waiting for a connection looks at the health this often
WHILE_DOWN_WAIT = 0.01  # s: while down, a call takes a ready connection, never waits


class _Reconnect(AttemptWithBackoff):
    """The pool's backoff between connection attempts, capped (and jittered,
    so that the pool's connections do not all knock at once)."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_MAX * random.uniform(0.7, 1.0))


class StorePool(ConnectionPool[Any]):
    def __init__(self, *args: Any, health: StoreHealth, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.health = health
        self._probe_lock = threading.Lock()
        self._probed_at = 0.0
        # Idle connections are dead once the store went away: replace them
        # all, rather than let calls find them out one by one.
        health.on_down(self._drain_if_open)

    @classmethod
    def instead_of(cls, datastore: PostgresDatastore, health: StoreHealth) -> StorePool:
        """The pool the library built for ``datastore`` (not opened yet), as a
        StorePool: same settings, plus a connect timeout for the connections
        the pool makes in the background (libpq's default is none)."""
        built = datastore.pool
        assert built.closed, "replace the pool before it is opened"
        kwargs = dict(built.kwargs) if isinstance(built.kwargs, dict) else {}
        kwargs.setdefault("connect_timeout", max(1, round(built.timeout)))
        return cls(
            health=health,
            get_password_func=built.get_password_func,
            connection_class=built.connection_class,
            kwargs=kwargs,
            min_size=built.min_size,
            max_size=built.max_size,
            open=False,
            configure=datastore.after_connect_func(),
            check=ConnectionPool.check_connection if datastore.pre_ping else None,
            name=built.name,
            timeout=built.timeout,
            max_waiting=built.max_waiting,
            max_lifetime=built.max_lifetime,
            max_idle=built.max_idle,
            reconnect_timeout=built.reconnect_timeout,
            num_workers=built.num_workers,
        )

    # --- calls ----------------------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> Any:
        """A connection, waiting up to ``timeout`` for one, but not while the
        store is down: then only one that is ready, else StoreUnavailable.

        What keeps the answer true: StoreUnavailable is raised before a
        connection is handed out, so nothing of the call reached the store
        and UNAVAILABLE says so. The wait slices, the reconnect delay cap and
        the probe interval only decide how soon the service answers again;
        tests/store/test_store_outage.py takes the store away for 10 s
        through a proxy."""
        if timeout is None:
            timeout = self.timeout
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if self.health.down:
                # Never queue while down: a waiting place is left behind by
                # every call that times out, until a connection comes.
                if self.get_stats().get("pool_available"):
                    try:
                        return super().getconn(WHILE_DOWN_WAIT)
                    except PoolTimeout:
                        pass
                self._ask_the_store(wait=False)
                if self.health.down:
                    raise StoreUnavailable("the event store is unavailable")
                continue  # back: a connection comes (the pool grows on demand)
            if remaining <= 0:
                raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec")
            try:
                return super().getconn(min(WAIT_SLICE, remaining))
            except PoolTimeout:
                continue  # (the health may have changed meanwhile)

    def putconn(self, conn: Any) -> None:
        broken = conn.broken
        super().putconn(conn)
        if broken and not self.closed:
            self._connection_broke()

    def _connection_broke(self) -> None:
        """Find out now whether the store is there, so that what the caller
        does next (and logs) is what the store's health says; then replace
        the idle connections, likely broken too."""
        if self.health.down or not self._ask_the_store(wait=True):
            return  # known, or just asked
        if not self.health.down:  # (if it is, they went when it went down)
            self._drain_if_open()

    def _ask_the_store(self, *, wait: bool) -> bool:
        """One connection attempt (its outcome goes to the health through
        _connect), unless one was made less than PROBE_INTERVAL ago or,
        without ``wait``, is being made; return whether it was made."""
        if not self._probe_lock.acquire(blocking=wait):
            return False
        try:
            if time.monotonic() - self._probed_at < PROBE_INTERVAL:
                return False
            with suppress(Exception):  # reported to the health by _connect
                self._connect(timeout=PROBE_TIMEOUT).close()
            self._probed_at = time.monotonic()
            return True
        finally:
            self._probe_lock.release()

    # --- connecting -----------------------------------------------------------------

    def _connect(self, timeout: float | None = None) -> Any:
        # (The library's pool overrides this too, to fetch a password.)
        try:
            conn = super()._connect(timeout=timeout)
        except Exception as e:
            self.health.failed(e)
            raise
        self.health.ok()
        return conn

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _Reconnect(timeout=self.reconnect_timeout), growing)

    def _drain_if_open(self) -> None:
        if not self.closed:
            self.drain()


class SessionsPostgresFactory(PostgresFactory):
    """The library's factory, with a StorePool and the store's health."""

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        self.health = StoreHealth()
        self.datastore.pool = StorePool.instead_of(self.datastore, self.health)
