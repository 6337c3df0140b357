"""The projector: folds the event log into the session rows of the read
model (``session_snapshots``), catching up in batches, then tailing.

It is three things, each in its module: a batch, fold -> save, in one
transaction (projection.batches); the thread that tails the log and its
wake-ups (projection.tailing); and, here, the position and the table it
folds into, which changes when a rebuild takes over.

Commands write their sessions' rows themselves, with their events
(projection.write_through), so no answer waits for the projector; its
position is where the log has been folded, which ``wait_for`` waits for
(tests, readiness at start).

**Table switch-over.** Each batch checks, in its own transaction, that its
table is still live or being built (projection.registry). When a rebuild
has taken over, the batch writes nothing and the projector moves to the new
live table: it catches it up to the head first, so its position never goes
back.

**Ownership** (projection.ownership): on PostgreSQL any number of
projectors may run against one read model; the one holding its advisory
lock folds, the others are hot standbys that take over when its connection
ends. Each batch checks the ownership's generation in its transaction (the
fence), so a former owner never commits a batch after a takeover; the new
owner starts from the stored position, with nothing in memory from before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Notification

from sessions.projection.batches import FoldAndSave
from sessions.projection.fold import SKIPPED_TOPICS, SessionFold
from sessions.projection.ownership import NotOwner, Ownership, SoleOwnership
from sessions.projection.registry import Registry, Superseded
from sessions.projection.row_tables import rows_on
from sessions.projection.rows import NAME, SessionRows
from sessions.projection.tailing import Tailing
from sessions.store.application import SessionsApplication
from sessions.store.health import log_failure
from sessions.store.records import select_notifications_except

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_SETTLE = 0.1  # after a wake-up by a write, before folding it
DEFAULT_CACHE_SIZE = 20_000
SKIPPED_TOPIC_LIST = sorted(SKIPPED_TOPICS)

# Where notifications come from: (after, limit) -> (batch, position reached).
Feed = Callable[[int, int], tuple[list[Notification], int]]


class Projector:
    def __init__(
        self,
        app: SessionsApplication,
        table: SessionRows,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_batch: Callable[[int, int], None] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        feed: Feed | None = None,
        settle: float = DEFAULT_SETTLE,
        registry: Registry | None = None,
        ownership: Ownership | None = None,
    ):
        """``table``: the session rows it folds into. ``feed``: the
        application's log by default, an archive offline. ``registry``: each
        batch checks that its table is still live or being built, and the
        projector moves to the live table when it is not. ``ownership``:
        folds only while it owns the read model (default: always)."""
        self.app = app
        self.registry = registry
        self.ownership: Ownership = ownership or SoleOwnership()
        self._taken = threading.Event()  # ownership was (re)taken: resume from the stored state
        self.feed = feed or self._from_log
        self.fold = SessionFold(app.mapper)
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.cache_size = cache_size
        self.error: BaseException | None = None
        self._batches = self._batches_into(table)
        self._position = table.position()
        self._progress = threading.Condition()
        self._switch_to: SessionRows | None = None  # the live table, after a takeover
        self._batch_was_full = False
        self._batch_lock = threading.Lock()  # one batch at a time, whoever runs it
        self._tailing = Tailing(self, app, poll_interval, settle)

    @property
    def table(self) -> SessionRows:
        """The table it folds into."""
        return self._batches.table

    @property
    def position(self) -> int:
        return self._position

    # --- catching up ------------------------------------------------------------

    def run_batch(self) -> int:
        """Fold the next batch of the log; return how far the position moved."""
        with self._batch_lock:
            return self._run_batch()

    def _run_batch(self) -> int:
        if not self.ownership.held:
            return 0
        if self._taken.is_set():
            self._resume_as_owner()
        before = self._position
        notifications, reached = self.feed(before, self.batch_size)
        if reached <= before:
            return 0
        self._batch_was_full = len(notifications) >= self.batch_size
        folded = self._batches.save(notifications, reached)
        self._advance(reached)
        if self.on_batch:
            self.on_batch(folded, reached)
        return reached - before

    def catch_up(self) -> int:
        """Fold until the head of the log as it is now; return how far the
        position moved (nothing if another process owns the read model)."""
        total = 0
        self.take_ownership()
        while (n := self.run_batch()) > 0:
            total += n
        return total

    def _from_log(self, after: int, limit: int) -> tuple[list[Notification], int]:
        """Only what the fold may need is read (not the other streams' known
        topics), up to the head as it is now; the position then moves past
        the rest too. Commit order is id order in the store, so nothing
        below the head can still appear."""
        head = self.app.recorder.max_notification_id() or 0
        if head <= after:
            return [], after
        batch = select_notifications_except(self.app.recorder, after, limit, head, SKIPPED_TOPIC_LIST)
        return batch, (batch[-1].id if len(batch) >= limit else head)

    def _advance(self, position: int) -> None:
        with self._progress:
            self._position = position
            self._progress.notify_all()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until ``position`` (an Outcome's position token, a head) is
        folded, or timeout. A waiting caller folds the batch itself when the
        projector is idle: no hand-over to the projector's thread and back
        (errors are left to the projector's loop)."""
        if self._position >= position:
            return True
        if self._tailing.running and self._batch_lock.acquire(blocking=False):
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
                lambda: self._position >= position or self._tailing.stopped.is_set(), timeout
            ) and self._position >= position

    def _run_batch_inline(self) -> int:
        try:
            return self._run_batch()
        except Exception:  # the projector's own loop reports and recovers
            log.debug("projector: inline batch failed", exc_info=True)
            self.wake(hurry=True)
            return 0

    # --- tailing (projection.tailing) ----------------------------------------------

    def start(self) -> None:
        self.ownership.start(self._on_taken)
        self._tailing.start()

    def stop(self, timeout: float = 10) -> None:
        self._tailing.stopped.set()
        with self._progress:
            self._progress.notify_all()
        self._tailing.stop(timeout)
        self.ownership.stop()

    # --- ownership (projection.ownership) ------------------------------------------

    def take_ownership(self) -> bool:
        """One attempt, before tailing starts (`sessions project` catching up)."""
        if self.ownership.held:
            return True
        if self.ownership.try_take():
            self._on_taken()
            return True
        return False

    def _on_taken(self) -> None:
        self._taken.set()
        self.wake(hurry=True)

    def _resume_as_owner(self) -> None:
        """Just taken over: the former owner's last batch has committed or
        never will (the fence), so the stored state is the truth; what this
        process kept in memory from before may be older."""
        self._taken.clear()
        self._batches = self._batches_into(self.table)
        self._resync()
        log.info("projector: folding %s from position %d", self.table.table, self._position)

    def _follow_owner(self) -> None:
        """A standby: keep the position the owner stored (``wait_for``), in
        the live table (a rebuild's takeover may have dropped this one)."""
        try:
            if self.registry is not None:
                live = self.registry.get(NAME).live_table
                if live != self.table.table:
                    log.info("projector (standby): following %s, live since a rebuild", live)
                    self._batches = self._batches_into(rows_on(self.app, live))
            stored = self.table.position()
        except Exception:  # the store is down; the next turn will tell
            log.debug("projector: cannot read the stored position", exc_info=True)
            return
        if stored > self._position:
            self._advance(stored)

    def wake(self, hurry: bool = False) -> None:
        """Fold what is new; at once if ``hurry`` (someone waits for it)."""
        self._tailing.wake(hurry)

    def step(self) -> bool:
        """The tailing thread's turn: move to the live table if a rebuild
        took over, then fold a batch; True when more is waiting at once."""
        if not self.ownership.held:
            self._follow_owner()
            return False
        try:
            if self._switch_to is not None:
                with self._batch_lock:
                    table, self._switch_to = self._switch_to, None
                    self._switch(table)
            return bool(self.run_batch()) and self._batch_was_full
        except Superseded as e:  # a rebuild took over: fold into its table
            log.info("projector: %s", e)
            self._batches.forget()
            self._switch_to = rows_on(self.app, e.registration.live_table)
            return True
        except NotOwner as e:  # another process took over since this one last checked
            log.info("projector: %s", e)
            self._batches.forget()
            self.ownership.lost(e.generation)
            return False

    def failed(self, error: Exception) -> bool:
        """A batch failed: say so, and take the stored state as the truth
        again; True when the table moved (go on at once)."""
        self.error = error
        log_failure(log, self.app.store_health, "projector: batch after position %d failed", self._position)
        self._batches.forget()
        self._resync()
        return self._switch_to is not None

    # --- table switch-over ----------------------------------------------------------

    def _batches_into(self, table: SessionRows) -> FoldAndSave:
        return FoldAndSave(table, self.fold, self.cache_size, self._check_current)

    def _check_current(self, cursor: Any) -> None:
        """First in each batch's transaction: NotOwner unless this projector
        still owns the read model, Superseded unless its table is still live
        or being built."""
        self.ownership.check(cursor)
        if self.registry is not None:
            self.registry.check(cursor, NAME, self.table.table)

    def _switch(self, table: SessionRows) -> None:
        Projector(
            self.app, table, batch_size=max(self.batch_size, 2000), registry=self.registry, ownership=self.ownership
        ).catch_up()
        previous = self.table.table
        self._batches = self._batches_into(table)
        self._advance(max(table.position(), self._position))
        log.info("projector: moved from %s to %s at position %d", previous, table.table, self._position)

    def _resync(self) -> None:
        """Take the stored position as the truth again: another instance may
        have moved it, or a commit may have landed whose answer was lost."""
        try:
            if self.registry is not None:
                # A batch on a table a takeover dropped fails before its
                # check can say so.
                registration = self.registry.get(NAME)
                if self.table.table not in registration.tables:
                    self._switch_to = rows_on(self.app, registration.live_table)
                    return
            self._advance(self.table.position())
        except Exception:  # the store is down; the next batch will tell
            log.debug("projector: cannot read the stored position", exc_info=True)

