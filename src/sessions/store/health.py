"""Whether the store can be reached, said once when that changes.

While the store is away, every call and every background worker (projector,
deadline worker) fails, again and again. The store's health
says it once (one line when it goes away, one when it is back) and the
workers log what an outage makes fail at debug level only: no traceback
every few seconds from each of them. Calls answer UNAVAILABLE at once
(StoreUnavailable) instead of waiting for a connection that cannot come.

On PostgreSQL the connection pool (store.postgres) reports to it; SQLite is
a file, never away: its health stays up.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

log = logging.getLogger("sessions.store")


class StoreUnavailable(PersistenceError):
    """The store cannot be reached now; answered UNAVAILABLE.

    Not an OperationalError on purpose: the library retries those (ten
    times, 0.2 s apart) and a call would wait for nothing. Code that reads
    any other PersistenceError as "the store refused this" must let it pass
    (as it does OperationalError)."""


class StoreHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._on_down: list[Callable[[], None]] = []
        self._on_back: list[Callable[[], None]] = []

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def on_down(self, callback: Callable[[], None]) -> None:
        self._on_down.append(callback)

    def on_back(self, callback: Callable[[], None]) -> None:
        self._on_back.append(callback)

    def failed(self, error: BaseException) -> None:
        """A connection to the store could not be made."""
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.error(
            "store unavailable: %s; calls answer UNAVAILABLE until it is back",
            " ".join(str(error).split()) or type(error).__name__,
        )
        for callback in self._on_down:
            callback()

    def ok(self) -> None:
        """A connection to the store was made."""
        with self._lock:
            if self._down_since is None:
                return
            lasted, self._down_since = time.monotonic() - self._down_since, None
        log.warning("store is back (unavailable for %.1fs)", lasted)
        for callback in self._on_back:
            callback()


OUTAGE_ERRORS = (StoreUnavailable, OperationalError, InterfaceError)


def log_failure(logger: logging.Logger, health: StoreHealth, message: str, *args: object) -> None:
    """Log the exception being handled: with its traceback, unless it is what
    an outage the store's health already reported makes fail (then at debug
    level: the outage was said once)."""
    error = sys.exc_info()[1]
    if isinstance(error, StoreUnavailable) or (health.down and _is_outage(error)):
        logger.debug(message, *args, exc_info=True)
    else:
        logger.exception(message, *args)


def _is_outage(error: BaseException | None) -> bool:
    if isinstance(error, OUTAGE_ERRORS):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the connection to the store failed (so that
    whether a transaction committed is unknown), rather than that the store
    refused a statement (a deadlock, a lock timeout, a missing table: the
    transaction was rolled back). SQLite's errors are always the latter."""
    if isinstance(error, (StoreUnavailable, InterfaceError)):
        return True
    if not isinstance(error, OperationalError):
        return False
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    cause = error.__cause__
    if not isinstance(cause, psycopg.Error):
        return False
    state = cause.sqlstate
    return state is None or state.startswith("08")  # no answer, or a connection exception
