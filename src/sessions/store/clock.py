"""Time, injected: the domain never reads the clock, the store asks one of these."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import Lock

log = logging.getLogger("sessions.clock")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for tests and replays."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, **delta)
            return self._now


class SharedClock:
    """The database's clock, read through this host's: every process on one
    PostgreSQL store decides stalls, expiries and TTLs on the same time, so
    that a host whose clock is off neither expires sessions early nor keeps
    them past their time.

    The offset between this host's clock and the database's
    (``clock_timestamp()``, half the round trip taken off) is measured at
    the first reading and again every ``interval`` seconds, by whichever
    caller comes first (the others read on with the offset they have); a
    reading is this host's clock plus that offset. An offset over
    ``warn_above`` seconds is logged when it is found and when it changes
    much, since it means the host's clock needs attention. If the database
    cannot be asked, the last offset stays (at first: none).

    What keeps it right: the offset is a fact about two clocks, not about
    timing. A reading is off the database's clock by at most half the
    measuring round trip plus the drift between two measurements (parts per
    million over 30 s), whatever the host's clock says; the interval only
    bounds that drift. tests/consistency/test_shared_clock.py runs a server
    20 s behind (libfaketime) beside one on time."""

    def __init__(
        self,
        database_now: Callable[[], datetime],
        base: Clock = system_clock,
        *,
        interval: float = 30.0,
        warn_above: float = 1.0,
    ):
        self.database_now = database_now
        self.base = base
        self.interval = interval
        self.warn_above = warn_above
        self.offset = timedelta(0)
        self._measured_at: float | None = None
        self._measuring = Lock()
        self._warned: float | None = None

    def __call__(self) -> datetime:
        if self._measured_at is None or time.monotonic() - self._measured_at >= self.interval:
            self.measure(blocking=self._measured_at is None)
        return self.base() + self.offset

    def measure(self, blocking: bool = True) -> None:
        if not self._measuring.acquire(blocking=blocking):
            return
        try:
            before = self.base()
            try:
                database = self.database_now()
            except Exception as e:  # noqa: BLE001 - keep the offset we have
                log.debug("clock: cannot read the database's clock: %s", e)
                self._measured_at = time.monotonic()
                return
            after = self.base()
            self.offset = database - (before + (after - before) / 2)
            self._measured_at = time.monotonic()
            seconds = self.offset.total_seconds()
            if abs(seconds) > self.warn_above and (
                self._warned is None or abs(seconds - self._warned) > self.warn_above
            ):
                self._warned = seconds
                log.warning(
                    "clock: this host's clock is %.1fs %s the database's; deadlines and times "
                    "are taken from the database's clock (fix the host's time sync)",
                    abs(seconds), "behind" if seconds > 0 else "ahead of",
                )
        finally:
            self._measuring.release()
