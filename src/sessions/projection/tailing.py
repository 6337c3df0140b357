"""Tailing and wake-ups: the projector's thread.

It folds what is new, then waits. New events are noticed three ways: a
wake-up in this process (the deadline worker's expiries; the store coming
back), PostgreSQL NOTIFY on the events table's channel from any process
(``_listen``), and a polling fallback (``poll_interval``), so that a lost
notification delays the projector one poll at most. When a notification
wakes it, it waits a moment (``settle``) so that one batch takes a burst;
no answer waits for it (commands write their rows themselves). A failed
batch is retried with a backoff, cut short when the store is back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

log = logging.getLogger("sessions.projection.projector")


class Tailed(Protocol):
    """What the thread drives (the Projector)."""

    def step(self) -> bool:
        """Fold the next batch; True when more is waiting at once."""

    def failed(self, error: Exception) -> bool:
        """A batch failed; True when it should go on at once (its table moved)."""


class Tailing:
    def __init__(self, tailed: Tailed, app: Any, poll_interval: float, settle: float):
        self.tailed = tailed
        self.app = app
        self.poll_interval = poll_interval
        self.settle = settle
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wake(self, hurry: bool = False) -> None:
        """Fold what is new; at once if ``hurry`` (someone waits for it)."""
        if hurry:
            self._hurry.set()
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()
        self.app.store_health.on_back(self.wake)
        if self.app.settings.backend == "postgresql":
            self._listener = threading.Thread(target=self._listen, name="projector-listen", daemon=True)
            self._listener.start()

    def stop(self, timeout: float = 10) -> None:
        self.stopped.set()
        self._hurry.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout)

    def _run(self) -> None:
        backoff = self.poll_interval
        while not self.stopped.is_set():
            try:
                self._wake.clear()
                self._hurry.clear()
                if self.tailed.step():
                    continue  # more is waiting: no pause while catching up
                backoff = self.poll_interval
            except Exception as e:  # keep tailing; the error is logged and shown
                if self.tailed.failed(e):
                    continue
                backoff = min(backoff * 2, 5.0)
                self._wake.wait(backoff)  # (woken early when the store is back)
                continue
            if self._wake.wait(self.poll_interval) and not self._hurry.is_set():
                # Woken by a write: its answer does not wait for this batch
                # (write_through), so let the writes right behind it join
                # it: one commit per burst instead of one per write.
                self._hurry.wait(self.settle)

    def _listen(self) -> None:
        """Turn PostgreSQL NOTIFYs on the events table's channel into wake-ups."""
        app = self.app
        channel = app.recorder.channel_name
        failing = False
        while not self.stopped.is_set():
            try:
                with app.settings.connect_postgres(autocommit=True) as conn:
                    conn.execute(f'LISTEN "{channel}"')
                    failing = False
                    while not self.stopped.is_set():
                        for _ in conn.notifies(timeout=0.25, stop_after=1):
                            self._wake.set()
            except Exception as e:  # polling still runs; try to listen again
                self.stopped.wait(1.0)
                # Said once, and not at all when the store is away (its
                # health said that; the pool notices first: it is polled).
                if not failing and not app.store_health.down:
                    log.warning("projector: LISTEN failed (%s); polling meanwhile", e)
                failing = True
