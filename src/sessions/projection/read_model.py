"""The read side of one process: the live table of the read model, the
projector folding into it (unless another process runs it), waiting until
a write's own events are in it (read-your-writes), and following the
registry when a rebuild takes over.
"""

from __future__ import annotations

import logging
import threading

from sessions.projection.fold import SessionFold
from sessions.projection.listing import ListedRow, PageQuery
from sessions.projection.registry import Registry, caches_rows, new_reader_id
from sessions.projection.runner import Projector, wait_until
from sessions.projection.schema import version as code_version
from sessions.projection.snapshots import (
    NAME,
    ServedRow,
    SessionSnapshots,
    snapshots_on,
)
from sessions.projection.write_through import SessionRows, WriteThrough
from sessions.store.application import SessionsApplication
from sessions.store.health import log_failure

log = logging.getLogger("sessions.read_model")

WATCH_INTERVAL = 1.0
# How long a process that starts beside others that cache rows waits before
# it answers: long enough for each of them to look at the registry of
# readers at least once after it announced itself (see ReadModel.announce).
NOTICE_WAIT = 2 * WATCH_INTERVAL + 0.5
ROW_CACHE_SIZE = 50_000


class RowCache:
    """Recently served rows, for a process whose projector tells it which
    rows change. A row read from the store is kept only if no batch landed
    while it was read, so a stale row can never be kept.

    Only the writes of this process and its projector's batches say which
    rows changed; another API process on the same store writes rows this one
    would learn of only when its projector folds them. So the cache is used
    only while no other process reads the read model (see ReadModel)."""

    def __init__(self, size: int = ROW_CACHE_SIZE):
        self.size = size
        self._rows: dict[str, ServedRow] = {}
        self._lock = threading.Lock()
        self.epoch = 0  # moves with every committed batch

    def get(self, session_id: str) -> ServedRow | None:
        return self._rows.get(session_id)

    def keep(self, session_id: str, row: ServedRow, epoch: int) -> None:
        with self._lock:
            if epoch == self.epoch:
                self._rows[session_id] = row
                if len(self._rows) > self.size:
                    del self._rows[next(iter(self._rows))]

    def changed(self, session_ids: set[str]) -> None:
        with self._lock:
            self.epoch += 1
            if not session_ids:
                self._rows.clear()
            for session_id in session_ids:
                self._rows.pop(session_id, None)


class ReadModel:
    def __init__(
        self,
        app: SessionsApplication,
        *,
        run_projector: bool = True,
        cache_rows: bool = True,
        watch_interval: float = WATCH_INTERVAL,
    ):
        """``cache_rows``: keep served rows in memory (only with the
        projector here, which says which rows change; off for a process
        that serves no reads)."""
        self.app = app
        self.registry = Registry.of(app)
        self.watch_interval = watch_interval
        registration = self.registry.get(NAME)
        self._view = snapshots_on(app, registration.live_table)
        self.projector = Projector(app, self._view) if run_projector else None
        # Only a projector in this process can say which rows changed.
        self.rows = RowCache() if self.projector is not None and cache_rows else None
        self.reader_id = new_reader_id(caching=self.rows is not None)
        if self.projector is not None and self.rows is not None:
            self.projector.on_saved = self.rows.changed
        self._generation = registration.generation
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.outdated = registration.live_version != code_version(NAME)
        # The highest position whose rows this process wrote with its events.
        self._written_up_to = 0
        # Whether other processes read (and so write) this read model: then
        # the row cache is not used (see RowCache).
        self.shared = False
        if self.outdated:
            log.warning(
                "read model %s is at version %d, this build folds version %d: serving "
                "version %d; run `sessions projections rebuild` (or serve --rebuild-on-start)",
                NAME, registration.live_version, code_version(NAME), registration.live_version,
            )

    @property
    def view(self) -> SessionSnapshots:
        return self.projector.view if self.projector is not None else self._view

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        if self.projector is not None:
            self.projector.start()
        # From now on this process's commands write their rows themselves.
        self.app.write_through = WriteThrough(
            SessionFold(self.app.mapper), lambda: self.view, self._written
        )
        self.registry.reading(self.reader_id, NAME, self.view.table)
        self._check_shared()
        self._watcher = threading.Thread(target=self._watch, name="read-model-watch", daemon=True)
        self._watcher.start()

    def announce(self) -> int:
        """Say in the registry that this process reads (and writes) the read
        model, before it serves anything; return how many other processes
        cache its rows. Each of them stops using its cache once it sees this
        process, within its watch interval: a caller that waits NOTICE_WAIT
        before answering can be sure that none serves a row from its cache
        that this process's writes changed."""
        self.registry.reading(self.reader_id, NAME, self.view.table)
        others = self.registry.readers_of(self.view.table)
        return sum(1 for r in others if r != self.reader_id and caches_rows(r))

    def stop(self) -> None:
        self.app.write_through = None
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10)
        if self.projector is not None:
            self.projector.stop()
        try:
            self.registry.gone(self.reader_id)
        except Exception:  # the store may be gone already; the entry goes stale
            log.debug("read model: cannot unregister", exc_info=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_interval):
            try:
                self.follow_registry()
            except Exception:  # keep serving what we have; try again next time
                log_failure(log, self.app.store_health, "read model: cannot follow the registry")

    def follow_registry(self) -> None:
        """Say which table this process reads; move when another takes over;
        notice other processes reading it."""
        registration = self.registry.get(NAME)
        if registration.live_table != self.view.table:
            self._move_to(registration.live_table)
        if registration.generation != self._generation and self.rows is not None:
            self.rows.changed(set())  # rows changed outside the projector
        self._generation = registration.generation
        self.registry.reading(self.reader_id, NAME, self.view.table)
        self._check_shared()

    def _check_shared(self) -> None:
        if self.rows is None:
            return
        others = [r for r in self.registry.readers_of(self.view.table) if r != self.reader_id]
        if others and not self.shared:
            self.shared = True
            self.rows.changed(set())
            log.info("read model: %d other process(es) read %s: rows are read from it, not "
                     "from this process's cache", len(others), self.view.table)
        elif not others and self.shared:
            self.shared = False
            log.info("read model: no other process reads %s: caching rows again", self.view.table)

    def _move_to(self, table: str) -> None:
        log.info("read model: %s took over from %s", table, self.view.table)
        view = snapshots_on(self.app, table)
        if self.projector is not None:
            self.projector.switch_to(view)  # it moves once the new table is caught up
        elif view.position() >= max(self._view.position(), self._written_up_to):
            self._view = view
        else:  # the other process's projector has not caught it up yet
            log.info("read model: %s is behind %s; moving later", table, self._view.table)

    # --- reading --------------------------------------------------------------------

    def _written(self, written: SessionRows, position: int) -> None:
        """A command's rows committed with its events."""
        self._written_up_to = max(self._written_up_to, position)
        if self.rows is not None:
            self.rows.changed(written.session_ids)
        if self.projector is not None:
            self.projector.written(written.table, {r.session_id: r.version for r in written.rows})

    def shows(self, written: SessionRows) -> bool:
        """Whether reads here see rows a command wrote with its events: they
        went to the table read now, and no move to another table is under
        way (one that began before they committed might miss them)."""
        if self.projector is not None:
            return not self.projector.switching and self.projector.view.table == written.table
        return self._view.table == written.table

    def wait_for(self, position: int, timeout: float, written: SessionRows | None = None) -> bool:
        """Block until reads here show the write that ended at ``position``
        (and carried ``written``), or timeout."""
        if position <= 0:
            return True
        if written is not None and self.shows(written):
            return True
        if self.projector is not None:
            return self.projector.wait_for(position, timeout)
        # The projector runs in another process: watch its tracking position.
        return wait_until(lambda: self.view.position() >= position, timeout)

    def get(self, session_id: str) -> ServedRow | None:
        if self.rows is None or self.shared:
            return self.view.get(session_id)
        row = self.rows.get(session_id)
        if row is None:
            epoch = self.rows.epoch
            row = self.view.get(session_id)
            if row is not None:
                self.rows.keep(session_id, row, epoch)
        return row

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        return self.view.list_page(query)

    def page_token_key(self) -> bytes:
        return self.view.page_token_key()

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        return self.view.due_to_stall(silent_since, limit)

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        return self.view.due_to_expire(now, limit)
