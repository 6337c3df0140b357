"""The injected clocks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sessions.store.clock import ManualClock, system_clock


def test_manual_clock_stands_still_until_told():
    start = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock() == start
    assert clock() == start


def test_manual_clock_advances_by_seconds_and_other_units():
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.advance(1.5) == start + timedelta(seconds=1.5)
    assert clock.advance(minutes=2, microseconds=3) == start + timedelta(
        seconds=1.5, minutes=2, microseconds=3
    )
    assert clock() == start + timedelta(seconds=121.5, microseconds=3)


def test_manual_clock_default_start_is_timezone_aware():
    assert ManualClock()().utcoffset() == timedelta(0)


def test_manual_clock_advances_are_not_lost_under_threads():
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    start = clock()

    def tick() -> None:
        for _ in range(500):
            clock.advance(microseconds=1)

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() - start == timedelta(microseconds=4000)


def test_system_clock_is_utc_and_current():
    before = datetime.now(UTC)
    now = system_clock()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after
