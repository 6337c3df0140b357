"""The group's metrics under `sessions serve --workers N`."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from sessions.metrics.serving import (
    close_http,
    register_build_info,
    serve_registry,
)
from sessions.metrics.store import StoreCollector

log = logging.getLogger("sessions.metrics")


# The group's directory: DIRECTORY_PREFIX, the parent's pid, "-", a random part.
DIRECTORY_PREFIX = "sessions-metrics-"


def remove_stale_directories(folder: str | None = None) -> list[str]:
    """Remove the group directories left by parents that are gone (killed
    with SIGKILL, so ``close`` never ran): those whose pid names no live
    process. A live pid keeps its directory, even if the pid was reused
    (left, never a live group's removed). The removed ones, for the log."""
    folder = folder or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid_text, dash, _ = name.removeprefix(DIRECTORY_PREFIX).partition("-")
        if not name.startswith(DIRECTORY_PREFIX) or not dash or not pid_text.isdigit():
            continue
        if _alive(int(pid_text)):
            continue
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(name)
        log.info("metrics: removed %s, left by a group whose parent (pid %s) is gone", name, pid_text)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's: alive)
        return True
    return True


class GroupMetrics:
    """The metrics of `sessions serve --workers N`, served by the parent at
    --metrics-listen for the whole group (the library's multiprocess mode,
    its documented way for servers of several processes):

    - **counters and histograms** (calls, events, commits, replays,
      refusals, REST): each worker writes its own into files named by its
      pid in ``directory`` (made fresh here, named by the parent's pid,
      removed by ``close``, or at the next group's start on this machine
      if the parent was killed before it could close it); a
      scrape sums every file. A worker that exits leaves what it counted:
      ``worker_exited`` adds its files into the ``*_retired.db`` files, so
      the sums never go back when a worker is replaced, and the files stay
      one per live worker plus one. A counter counts what the group has
      counted since the parent started: a restart of the parent (not of a
      worker) starts from 0, as a restart of one process does.
    - **the store's figures** and ``sessions_build_info``: read by the
      parent itself when scraped, through a store connection of its own
      opened at the first scrape (``open_store``), so they appear once.
    - ``sessions_projector_owner``: 1 while worker 0's projector holds the
      read model's ownership, as the database says (the projectors table
      joined with its locks, as `projections status` reads it; on SQLite,
      while worker 0 runs); left out when the group runs no projector.

    Workers write no gauges (``Metrics(shared=True)``), so no gauge mode is
    needed; ``mark_process_dead`` is still called for a worker that exits,
    as the library asks."""

    def __init__(self, open_store: Callable[[], tuple[Any, Any]], projector_pid: Callable[[], int | None] | None):
        """``open_store``: (application, its projection registry), opened in
        this process; ``projector_pid``: the pid of the worker that runs the
        projector while it runs (None: none runs now), or None if the group
        runs no projector."""
        disable_created_metrics()
        remove_stale_directories()
        self.directory = tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-")
        self.registry = CollectorRegistry()
        self._files = _WorkerFiles(self.directory)
        self.registry.register(self._files)
        self._store = _GroupStore(open_store, projector_pid)
        self.registry.register(self._store)
        register_build_info(self.registry)
        self._http: Any = None
        self.port = 0

    def listen(self, listen: str) -> int:
        self._http, self.port = serve_registry(self.registry, listen)
        return self.port

    def worker_exited(self, pid: int) -> None:
        self._files.retire(pid)

    def close(self) -> None:
        """Stop serving, close the store, remove the directory (after the
        workers stopped)."""
        if self._http is not None:
            close_http(self._http)
            self._http = None
        self._store.close()
        self._files.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _WorkerFiles(Collector):
    """The sums of the workers' files. One lock keeps a scrape and the
    retirement of a worker's files apart: a scrape never sees a worker's
    counts both in its own files and in the retired ones, nor in neither."""

    RETIRED = ("counter", "histogram")  # the kinds a worker writes

    def __init__(self, directory: str):
        self.directory = directory
        self._lock = threading.Lock()
        self._collector = MultiProcessCollector(None, path=directory)
        self._retired: dict[str, MmapedDict] = {}

    def collect(self) -> Iterable[Any]:
        with self._lock:
            return list(self._collector.collect())

    def retire(self, pid: int) -> None:
        """Worker ``pid`` exited (it writes no more): its counts go into the
        retired files, added key by key (a histogram's buckets are stored
        per bucket, so they add too), and its own files go."""
        mark_process_dead(pid, self.directory)
        with self._lock:
            for kind in self.RETIRED:
                path = os.path.join(self.directory, f"{kind}_{pid}.db")
                if not os.path.exists(path):
                    continue
                retired = self._retired.get(kind)
                if retired is None:
                    retired = self._retired[kind] = MmapedDict(os.path.join(self.directory, f"{kind}_retired.db"))
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                    before, _ = retired.read_value(key)
                    retired.write_value(key, before + value, timestamp)
                os.remove(path)

    def close(self) -> None:
        with self._lock:
            for retired in self._retired.values():
                retired.close()
            self._retired.clear()


class _GroupStore(Collector):
    """The store's figures (StoreCollector) and the projector's ownership,
    read by the parent when scraped, through an application it opens at
    the first scrape (and again at the next, if the store could not be
    reached: ``sessions_store_up 0`` meanwhile)."""

    def __init__(self, open_store: Callable[[], tuple[Any, Any]], projector_pid: Callable[[], int | None] | None):
        self._open_store = open_store
        self._projector_pid = projector_pid
        self._lock = threading.Lock()
        self._app: Any = None
        self._collector: StoreCollector | None = None
        self._host = socket.gethostname()

    def describe(self) -> Iterable[Any]:
        return []  # (registering must not open the store)

    def collect(self) -> Iterable[Any]:
        with self._lock:
            collector = self._opened()
            if collector is None:
                up = GaugeMetricFamily("sessions_store_up", "1 if the store answered this scrape, else 0.")
                up.add_metric([], 0.0)
                return [up]
            found = list(collector.collect())
            owner = self._owner()
            return found if owner is None else [*found, owner]

    def _opened(self) -> StoreCollector | None:
        if self._collector is None:
            try:
                app, registry = self._open_store()
                if self._projector_pid is not None:
                    try:
                        # Once, here: a scrape reads them without DDL (no
                        # schema lock to queue behind).
                        from sessions.projection.ownership import create_tables

                        if app.settings.backend == "postgresql":
                            create_tables(app)
                    except BaseException:
                        app.close()
                        raise
                self._app = app
            except Exception:  # noqa: BLE001 - said as sessions_store_up 0
                log.debug("metrics: cannot open the store", exc_info=True)
                return None
            self._collector = StoreCollector(self._app, registry)
        return self._collector

    def _owner(self) -> GaugeMetricFamily | None:
        if self._projector_pid is None:
            return None
        from sessions.projection.ownership import projectors
        from sessions.projection.rows import NAME

        pid = self._projector_pid()
        try:
            found = projectors(self._app, NAME, create=False) if pid is not None else []
        except Exception:  # noqa: BLE001 - the store's trouble is said by sessions_store_up
            log.debug("metrics: cannot read the projectors", exc_info=True)
            return None
        if found is None:  # SQLite: worker 0's projector is the file's one projector
            owns = pid is not None
        else:
            owns = any(p.role == "owner" and p.pid == pid and p.host == self._host for p in found)
        family = GaugeMetricFamily(
            "sessions_projector_owner",
            "1 if worker 0's projector folds the read model now, 0 if it is a standby or not running.",
        )
        family.add_metric([], 1.0 if owns else 0.0)
        return family

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
                self._collector = None
