"""Rebuilding a read model from the whole log, while the live one serves.

The new build folds from position 0 into new tables (tracking under its own
name), in large batches. When it reaches the head it takes over in one
registry update; servers move to it between two requests (their projectors
first catch it up, so nobody sees less than they waited for). Old tables are
dropped once no process reads them any more, unless asked to keep them.
Stopped at any point (Ctrl-C, kill -9), the live model is untouched; the
next run resumes the unfinished build where its tracking position says.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sessions.projection.registry import Registry
from sessions.projection.runner import Feed, Projector, wait_until
from sessions.projection.schema import version as code_version
from sessions.projection.snapshots import NAME, SessionSnapshots, snapshots_on

log = logging.getLogger("sessions.rebuild")

# Events read per batch (one transaction each; other streams' events are
# passed by and not counted). Larger batches cost fewer round trips and
# commits per event, and fewer rows: a session's row is written once per
# batch that changes it.
REBUILD_BATCH = 20000
REBUILD_CACHE = 200_000
DROP_WAIT = 30.0


@dataclass
class RebuildResult:
    table: str
    version: int
    events: int
    seconds: float
    resumed_from: int
    replaced: str
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def rebuild(
    app: Any,
    *,
    feed: Feed | None = None,
    keep_old: bool = False,
    batch_size: int = REBUILD_BATCH,
    on_progress: Callable[[int], None] | None = None,
    drop_wait: float = DROP_WAIT,
) -> RebuildResult:
    """Build the read model afresh from the log (or ``feed``, e.g. an archive)
    and make it live; see the module's docstring."""
    registry = Registry.of(app)
    registration = registry.get(NAME)
    version = code_version(NAME)
    view = _build_table(app, registry, registration, version)
    projector = Projector(app, view, batch_size=batch_size, cache_size=REBUILD_CACHE, feed=feed)
    resumed_from = projector.position
    if resumed_from:
        log.info("rebuild: resuming %s from position %d", view.table, resumed_from)
    if on_progress:
        on_progress(resumed_from)
        projector.on_batch = lambda n, position: on_progress(position)
    began = time.perf_counter()
    with _older_objects_frozen():
        events = projector.catch_up()
    seconds = time.perf_counter() - began
    registry.take_over(NAME, view.table, version)
    log.info("rebuild: %s took over from %s at position %d", view.table, registration.live_table, projector.position)
    result = RebuildResult(view.table, version, events, seconds, resumed_from, registration.live_table)
    if registration.live_table != view.table:
        if keep_old:
            result.kept.append(registration.live_table)
        elif _wait_until_unread(registry, registration.live_table, drop_wait):
            snapshots_on(app, registration.live_table).drop()
            result.dropped.append(registration.live_table)
        else:
            log.warning("rebuild: %s is still read; keeping it", registration.live_table)
            result.kept.append(registration.live_table)
    return result


def _build_table(app: Any, registry: Registry, registration: Any, version: int) -> SessionSnapshots:
    """The unfinished build to resume, or a new, empty table."""
    if registration.building_table and registration.building_version == version:
        return snapshots_on(app, registration.building_table)
    if registration.building_table:  # a build of another version: start over
        snapshots_on(app, registration.building_table).drop()
    return snapshots_on(app, registry.start_build(NAME, version))


@contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Keep the objects that existed before the rebuild out of the garbage
    collector's full collections while it runs (gc.freeze), and give them
    back after. A rebuild keeps many objects alive (its batch, its cache of
    sessions), so full collections come during it, and each would walk
    everything else the process holds too (a server's, for a rebuild that
    runs in one): that was about a tenth of a rebuild's time. Objects made
    meanwhile are collected as usual. Left alone if something else froze
    objects already (then unfreezing would not be ours to do)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _wait_until_unread(registry: Registry, table: str, timeout: float) -> bool:
    return wait_until(lambda: not registry.readers_of(table), timeout, interval=0.5)
