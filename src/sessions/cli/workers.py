"""`sessions serve --workers N`: N server processes on one listen address.

One interpreter serves calls on one CPU at a time; N processes use N cores.
This parent starts N workers (`sessions serve` again, with the same
arguments and a worker index), watches and stops them:

- every worker listens on the same address with SO_REUSEPORT, and the kernel
  spreads the connections among them;
- worker 0 runs the projector and the deadline worker (unless turned off),
  serves REST (--http-listen) and rebuilds at start (--rebuild-on-start);
  the others only serve gRPC, so the projector runs once (and on
  PostgreSQL, its ownership makes a second one a standby anyway);
- with --metrics-listen HOST:PORT, this parent serves the group's metrics
  there (sessions.metrics.GroupMetrics): each worker counts into files of
  its own in a directory made for this run (PROMETHEUS_MULTIPROC_DIR in its
  environment), a scrape sums them, and the files of a worker that exits
  are kept in the sums;
- SIGTERM or SIGINT is passed to every worker, which drains its calls
  (--grace); SIGHUP too (credentials reloaded by each);
- a worker that exits is logged and started again (at most once a second
  while it keeps failing); one that exits at start with 2 (bad usage) or 3
  (store unreachable) stops them all with its exit code, since starting it
  again cannot help.

Every line a worker logs names it (`[worker K pid P]`, or `worker` and
`pid` fields in JSON).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessions.metrics import GroupMetrics

log = logging.getLogger("sessions.workers")

FATAL_AT_START = (2, 3)  # exit codes that starting the worker again cannot fix
START_WINDOW = 10.0  # s: a worker that exits sooner "exits at start"
WATCH_INTERVAL = 0.2  # s between looks at the workers
MOST_RESTART_DELAY = 10.0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    delay: float  # before the next start, if this one exits soon


def _stop_with_parent() -> None:
    """In the worker, before it runs: the kernel sends it SIGTERM when this
    parent dies, however it dies (SIGKILL included), so that no orphaned
    worker goes on serving beside the next group on the shared port.
    Linux only (prctl); elsewhere workers outlive a killed parent."""
    if sys.platform != "linux":
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Workers:
    def __init__(self, argv: Sequence[str], count: int, grace: float):
        """``argv``: the `sessions` command line this parent was started with."""
        self.argv = list(argv)
        self.count = count
        self.grace = grace
        self._stop = threading.Event()
        self._workers: dict[int, _Worker] = {}
        self.metrics: GroupMetrics | None = None  # served here for the group (--metrics-listen)

    def pid(self, index: int) -> int | None:
        """The pid of worker ``index`` while it runs."""
        worker = self._workers.get(index)
        return worker.proc.pid if worker is not None and worker.proc.poll() is None else None

    def _start(self, index: int, delay: float = 0.0) -> None:
        env = None
        if self.metrics is not None:
            from sessions.metrics import MULTIPROC_DIR

            env = {**os.environ, MULTIPROC_DIR: self.metrics.directory}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sessions", *self.argv, "--worker-index", str(index)],
            preexec_fn=_stop_with_parent,
            env=env,
        )
        self._workers[index] = _Worker(index, proc, time.monotonic(), delay)
        log.info("worker %d started (pid %d)", index, proc.pid)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda signum, frame: self._stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: self._stop.set())
        signal.signal(signal.SIGHUP, lambda signum, frame: self._signal_all(signal.SIGHUP))
        log.info("starting %d workers", self.count)
        code = 0
        try:
            for index in range(self.count):
                self._start(index)
            while not self._stop.wait(WATCH_INTERVAL):
                code = self._watch()
                if code:
                    break
        finally:
            try:
                self._stop_all()
            finally:
                if self.metrics is not None:
                    self.metrics.close()  # (its directory and HTTP thread, whatever stopped us)
        return code

    def _watch(self) -> int:
        """Start again the workers that exited; an exit code to stop with."""
        for worker in list(self._workers.values()):
            code = worker.proc.poll()
            if code is None:
                continue
            lived = time.monotonic() - worker.started
            if self.metrics is not None:
                self.metrics.worker_exited(worker.proc.pid)  # (its counts stay in the sums)
            if code in FATAL_AT_START and lived < START_WINDOW:
                log.error("worker %d (pid %d) exited at start with %d: stopping", worker.index, worker.proc.pid, code)
                return code
            delay = min(max(worker.delay * 2, 1.0), MOST_RESTART_DELAY) if lived < START_WINDOW else 0.0
            log.warning(
                "worker %d (pid %d) exited with %s after %.1fs; starting another%s",
                worker.index,
                worker.proc.pid,
                code,
                lived,
                f" in {delay:g}s" if delay else "",
            )
            if delay and self._stop.wait(delay):
                return 0
            self._start(worker.index, delay)
        return 0

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signum)

    def _stop_all(self) -> None:
        log.info("stopping %d workers (each finishes its calls, up to %gs)", len(self._workers), self.grace)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 15
        for worker in self._workers.values():
            try:
                worker.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop: killed", worker.index, worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()
        log.info("stopped")
