"""The projector: folds the event log into the session_snapshots read model.

Catch up in batches, then tail. Each batch is one transaction holding the
changed rows, any parked events and the new tracking position (exactly
once). An event the fold cannot apply is parked with its error and the
projector goes on. New events are noticed three ways: a local wake-up from
writes in this process, PostgreSQL NOTIFY from other processes, and a
polling fallback, so that a lost notification delays it one poll at most.

Commands in a server write their sessions' rows themselves, with their
events (projection.write_through), so no answer waits for the projector: it
passes over the events whose rows are already written, and when a write
wakes it, it waits a moment (``settle``) so that one batch takes a burst.

Each batch checks, in its own transaction, that its table is still live or
being built (projection.registry). When a rebuild has taken over, the batch
writes nothing and the projector moves to the new live table: it catches
it up to the head first, so its position never goes back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    Tracking,
)

from sessions.domain.session import Session
from sessions.projection.fold import SESSION_TOPICS, SKIPPED_TOPICS, SessionFold, session_ids_in
from sessions.projection.registry import Registry, Superseded
from sessions.projection.snapshots import (
    NAME,
    ParkedEvent,
    SessionSnapshots,
    SnapshotRow,
    snapshots_on,
)
from sessions.store.application import SessionsApplication
from sessions.store.health import StoreUnavailable, log_failure
from sessions.store.records import select_notifications_except

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_SETTLE = 0.1  # after a wake-up by a write, before folding it
DEFAULT_CACHE_SIZE = 20_000
SESSION_TOPIC_LIST = sorted(SESSION_TOPICS)
SKIPPED_TOPIC_LIST = sorted(SKIPPED_TOPICS)

Feed = Callable[[int, int], tuple[list[Notification], int]]


class Projector:
    def __init__(
        self,
        app: SessionsApplication,
        view: SessionSnapshots,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_batch: Callable[[int, int], None] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        feed: Feed | None = None,
        settle: float = DEFAULT_SETTLE,
        registry: Registry | None = None,
    ):
        """``registry``: each batch checks in its own transaction that its
        table is still live or being built (see projection.registry), and
        the projector moves to the live table when it is not."""
        self.app = app
        self.registry = registry
        # Where notifications come from: (after, limit) -> (batch, position
        # reached); the application's log by default, an archive offline.
        self.feed = feed or self._from_log
        self.view = view
        self.fold = SessionFold(app.mapper)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.settle = settle
        self.on_batch = on_batch
        self.cache_size = cache_size
        self._cache: dict[str, Session] = {}  # insertion order = recency
        # Streams with parked events: their rows may change outside this
        # projector (retry-parked), so they are always read back.
        self._parked_streams: set[str] = _streams_parked_in(view)
        self._position = view.position()
        self._progress = threading.Condition()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._switch_to: SessionSnapshots | None = None  # the live table, after a takeover
        self._batch_was_full = False
        self._batch_lock = threading.Lock()  # one batch at a time, whoever runs it
        self._position_before = self._position
        self.error: BaseException | None = None

    # --- catching up ------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._position

    def run_batch(self) -> int:
        """Fold the next batch of the log; return how far the position moved."""
        with self._batch_lock:
            notifications, reached = self.feed(self._position, self.batch_size)
            if reached <= self._position:
                return 0
            self._batch_was_full = len(notifications) >= self.batch_size
            self._apply(notifications, reached)
            return reached - self._position_before

    def _from_log(self, after: int, limit: int) -> tuple[list[Notification], int]:
        """Only what the fold may need is read (not the other streams' known
        topics), up to the head as it is now; the position then moves past
        the rest too.
        Commit order is id order in the store, so nothing below the head can
        still appear."""
        head = self.app.recorder.max_notification_id() or 0
        if head <= after:
            return [], after
        batch = select_notifications_except(
            self.app.recorder, after, limit, head, SKIPPED_TOPIC_LIST
        )
        return batch, (batch[-1].id if len(batch) >= limit else head)

    def catch_up(self) -> int:
        """Fold until the head of the log as it is now; return how far the
        position moved."""
        total = 0
        while (n := self.run_batch()) > 0:
            total += n
        return total

    def _pass_over_written(self, notifications: list[Notification]) -> list[Notification]:
        """Leave out the events of sessions whose rows already hold them:
        commands write their rows with their events (projection.write_through),
        in this process or another, so a row whose version is at least its
        stream's last one in this batch needs nothing. Their cached states
        are dropped (the row is newer), to be read back if needed again."""
        latest: dict[str, int] = {}
        for n in notifications:
            if n.topic in SESSION_TOPICS:
                latest[str(n.originator_id)] = n.originator_version
        candidates = [sid for sid in latest if sid not in self._parked_streams]
        if not candidates:
            return notifications
        versions = self.view.row_versions(candidates)
        done = {sid for sid in candidates if versions.get(sid, 0) >= latest[sid]}
        if not done:
            return notifications
        for sid in done:
            self._cache.pop(sid, None)
        return [n for n in notifications if str(n.originator_id) not in done]

    def _apply(self, notifications: list[Notification], reached: int) -> None:
        self._position_before = self._position
        notifications = self._pass_over_written(notifications)
        ids = session_ids_in(notifications)
        sessions: dict[str, Session] = {}
        missing = []
        for sid in ids:
            cached = None if sid in self._parked_streams else self._cache.pop(sid, None)
            if cached is None:
                missing.append(sid)
            else:
                sessions[sid] = cached
        if missing:
            for sid, (version, state) in self.view.resume_points(missing).items():
                sessions[sid] = self.fold.resume(sid, version, state)
        try:
            changed, failures = self.fold.apply(sessions, notifications)
            rows = []
            for sid in sorted(changed):
                try:
                    rows.append(self.fold.row(sessions[sid]))
                except Exception as e:  # noqa: BLE001 - park the stream, go on
                    failed = {n.id for n, _ in failures}
                    failures += [
                        (n, f"cannot build the row: {type(e).__name__}: {e}")
                        for n in notifications
                        if str(n.originator_id) == sid and n.id not in failed
                    ]
                    del sessions[sid]
            parked = [_parked(n, error) for n, error in failures]
            last = reached
            tracking = Tracking(self.view.tracking_name, last)
            check = self._check_current if self.registry is not None else None
            try:
                self.view.save(rows, tracking, parked, check=check)
            except (OperationalError, InterfaceError, StoreUnavailable, Superseded):
                raise  # the store is down or busy (tried again), or moved on
            except (PersistenceError, ValueError, OverflowError) as e:
                # A row the store refuses (a poison event): the batch again,
                # each row on its own, and the events of a refused row parked
                # instead of retried forever.
                log.warning("projector: batch after %d refused (%s); writing its rows one by one", self._position, e)

                already = {event.position for event in parked}

                def refused(row: SnapshotRow, error: str) -> list[ParkedEvent]:
                    sessions.pop(row.session_id, None)
                    return [
                        _parked(n, error)
                        for n in notifications
                        if str(n.originator_id) == row.session_id and n.id not in already
                    ]

                parked = list(self.view.save(rows, tracking, parked, refused=refused, check=check))
            self._parked_streams.update(event.stream for event in parked)
            for event in parked:
                log.error(
                    "projector: parked event %d (%s v%d, %s): %s",
                    event.position, event.stream, event.version, event.topic, event.error,
                )
        except BaseException:
            # Folded objects may hold changes that were not committed.
            self._cache.clear()
            raise
        self._remember(sessions)
        self._advance(last)
        if self.on_batch:
            self.on_batch(len(notifications), last)

    def _check_current(self, cursor: Any) -> None:
        assert self.registry is not None
        self.registry.check(cursor, NAME, self.view.table)

    def _remember(self, sessions: dict[str, Session]) -> None:
        """Keep recently folded sessions, so the next batch need not read their
        state back (this projector is the only writer of its table)."""
        self._cache.update(
            (sid, s) for sid, s in sessions.items() if sid not in self._parked_streams
        )
        while len(self._cache) > self.cache_size:
            del self._cache[next(iter(self._cache))]

    def _resync(self) -> None:
        """Take the stored position as the truth again: another instance may
        have moved it, or a commit may have landed whose answer was lost."""
        try:
            if self.registry is not None:
                # A batch on a table a takeover dropped fails before its
                # check can say so.
                registration = self.registry.get(NAME)
                if self.view.table not in registration.tables:
                    self._switch_to = snapshots_on(self.app, registration.live_table)
                    return
            self._advance(self.view.position())
        except Exception:  # the store is down; the next batch will tell
            log.debug("projector: cannot read the stored position", exc_info=True)

    def _advance(self, position: int) -> None:
        with self._progress:
            self._position = position
            self._progress.notify_all()

    # --- read-your-writes ---------------------------------------------------------

    def wake(self, hurry: bool = False) -> None:
        """Fold what is new; at once if ``hurry`` (someone waits for it)."""
        if hurry:
            self._hurry.set()
        self._wake.set()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until ``position`` is folded into the read model, or timeout.

        A waiting writer folds the batch itself when the projector is idle:
        no hand-over to the projector's thread and back (the batch lock keeps
        one batch at a time; errors are left to the projector's loop)."""
        if self._position >= position:
            return True
        if self._thread is not None and self._batch_lock.acquire(blocking=False):
            try:
                while self._position < position and self._switch_to is None:
                    if not self._run_batch_inline():
                        break
            finally:
                self._batch_lock.release()
            if self._position >= position:
                return True
        self.wake(hurry=True)
        with self._progress:
            return self._progress.wait_for(
                lambda: self._position >= position or self._stop.is_set(), timeout
            ) and self._position >= position

    def _run_batch_inline(self) -> int:
        try:
            notifications, reached = self.feed(self._position, self.batch_size)
            if reached <= self._position:
                return 0
            self._apply(notifications, reached)
            return reached - self._position_before
        except Exception:  # the projector's own loop reports and recovers
            log.debug("projector: inline batch failed", exc_info=True)
            self.wake(hurry=True)
            return 0

    # --- tailing ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()
        self.app.store_health.on_back(self.wake)
        if self.app.settings.backend == "postgresql":
            self._listener = threading.Thread(
                target=self._listen, name="projector-listen", daemon=True
            )
            self._listener.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        with self._progress:
            self._progress.notify_all()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout)

    def _switch(self, view: SessionSnapshots) -> None:
        Projector(self.app, view, batch_size=max(self.batch_size, 2000), registry=self.registry).catch_up()
        self._cache.clear()
        self._parked_streams = _streams_parked_in(view)
        previous, self.view = self.view.table, view
        self._advance(max(view.position(), self._position))
        log.info("projector: moved from %s to %s at position %d", previous, view.table, self._position)

    def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                self._wake.clear()
                self._hurry.clear()
                if self._switch_to is not None:
                    with self._batch_lock:
                        view, self._switch_to = self._switch_to, None
                        self._switch(view)
                if self.run_batch() and self._batch_was_full:
                    continue  # more is waiting: no pause while catching up
                backoff = self.poll_interval
            except Superseded as e:  # a rebuild took over: fold into its table
                log.info("projector: %s", e)
                self._cache.clear()
                self._switch_to = snapshots_on(self.app, e.registration.live_table)
                continue
            except Exception as e:  # keep tailing; the error is logged and shown
                self.error = e
                health = self.app.store_health
                log_failure(log, health, "projector: batch after position %d failed", self._position)
                self._cache.clear()
                self._resync()
                if self._switch_to is not None:
                    continue  # superseded: move now
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
        channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
        failing = False
        while not self._stop.is_set():
            try:
                with self.app.settings.connect_postgres(autocommit=True) as conn:
                    conn.execute(f'LISTEN "{channel}"')
                    failing = False
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.25, stop_after=1):
                            self._wake.set()
            except Exception as e:  # polling still runs; try to listen again
                self._stop.wait(1.0)
                # Said once, and not at all when the store is away (its
                # health said that; the pool notices first: it is polled).
                if not failing and not self.app.store_health.down:
                    log.warning("projector: LISTEN failed (%s); polling meanwhile", e)
                failing = True


def _streams_parked_in(view: SessionSnapshots) -> set[str]:
    return {event.stream for event in view.parked()}


def _parked(n: Notification, error: str) -> ParkedEvent:
    error = error.replace("\0", "\\0")  # (the error is stored as text)
    return ParkedEvent(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state), error)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.002) -> bool:
    """Poll ``predicate`` until true or timeout (for processes without a projector)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
