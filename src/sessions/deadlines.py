"""The deadline worker: records that sessions stalled or expired.

Stalling and expiry are facts about time, so they are events in the history,
appended when they happen rather than guessed at read time. The worker finds
due sessions through the read model's partial indexes (its cost follows the
number of due sessions) and lets each session's aggregate decide under
optimistic concurrency, so several workers in several processes never record
one expiry twice, nor expire a session that was just heartbeated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sessions.store.application import SessionsApplication
from sessions.store.health import log_failure
from sessions.wire import micros

log = logging.getLogger("sessions.deadlines")

DEFAULT_INTERVAL = 1.0
BATCH = 500


class DueSessions(Protocol):
    """Where due sessions are found: the read model (or one of its tables)."""

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]: ...

    def due_to_expire(self, now: int, limit: int) -> list[str]: ...


@dataclass
class Sweep:
    stalled: int = 0
    expired: int = 0
    position: int = 0  # of the last event written


class DeadlineWorker:
    def __init__(
        self,
        app: SessionsApplication,
        due: DueSessions,
        *,
        interval: float = DEFAULT_INTERVAL,
        on_sweep: Callable[[Sweep], None] | None = None,
    ):
        self.app = app
        self.due = due
        self.interval = interval
        self.on_sweep = on_sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> Sweep:
        """Record every stall and expiry due now; return what was recorded."""
        result = Sweep()
        now = self.app.clock()
        for session_id in self.due.due_to_expire(micros(now), BATCH):
            if position := self.app.expire_session(session_id):
                result.expired += 1
                result.position = max(result.position, position)
        silent_since = micros(now - self.app.policy.heartbeat_grace)
        for session_id in self.due.due_to_stall(silent_since, BATCH):
            if position := self.app.stall_session(session_id):
                result.stalled += 1
                result.position = max(result.position, position)
        if result.stalled or result.expired:
            log.info("deadlines: %d stalled, %d expired", result.stalled, result.expired)
        if self.on_sweep:
            self.on_sweep(result)
        return result

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # keep running; a store outage is said once, and retried
                log_failure(log, self.app.store_health, "deadlines: sweep failed")
