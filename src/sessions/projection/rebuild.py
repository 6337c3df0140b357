"""Rebuilding a read model from the whole log, while the live one serves.

The new table is registered as being built before anything is folded into
it: from then on every write writes its rows into it too (see
projection.registry). The build folds from position 0 (tracking under its
own name), in large batches, up to the head as it was once registered: then
it holds every write, folded or written, and takes over in one transaction
that moves reads (the live view) and writes together. The old tables are
dropped at once (nothing reads them: reads go through the view, and a
projector still folding into one finds it superseded in its next batch),
unless asked to keep them.
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

from sessions.projection.projector import Feed, Projector
from sessions.projection.registry import Registry
from sessions.projection.row_tables import rows_on
from sessions.projection.rows import NAME, SessionRows
from sessions.projection.schema import version as code_version

log = logging.getLogger("sessions.rebuild")

# Events read per batch (one transaction each; other streams' events are
# passed by and not counted). Larger batches cost fewer round trips and
# commits per event, and fewer rows: a session's row is written once per
# batch that changes it.
REBUILD_BATCH = 20000
REBUILD_CACHE = 200_000


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
) -> RebuildResult:
    """Build the read model afresh from the log (or ``feed``, e.g. an archive)
    and make it live; see the module's docstring."""
    registry = Registry.of(app)
    registration = registry.get(NAME)
    version = code_version(NAME)
    table = _build_table(app, registry, registration, version)
    # Registered: every write from now on has its rows in the new table too,
    # so it is complete once it has folded the log up to this head.
    head = app.recorder.max_notification_id() or 0
    projector = Projector(
        app, table, batch_size=batch_size, cache_size=REBUILD_CACHE, feed=feed, registry=registry
    )
    resumed_from = projector.position
    if resumed_from:
        log.info("rebuild: resuming %s from position %d", table.table, resumed_from)
    if on_progress:
        on_progress(resumed_from)
        projector.on_batch = lambda n, position: on_progress(position)
    began = time.perf_counter()
    with _older_objects_frozen():
        events = projector.catch_up()
    seconds = time.perf_counter() - began
    if feed is None and projector.position < head:
        raise RuntimeError(f"rebuild: stopped at {projector.position}, before the head {head}")
    registry.take_over(NAME, table.table, version)
    log.info("rebuild: %s took over from %s at position %d", table.table, registration.live_table, projector.position)
    result = RebuildResult(table.table, version, events, seconds, resumed_from, registration.live_table)
    if registration.live_table != table.table:
        if keep_old:
            result.kept.append(registration.live_table)
        else:
            rows_on(app, registration.live_table).drop()
            result.dropped.append(registration.live_table)
    return result


def _build_table(app: Any, registry: Registry, registration: Any, version: int) -> SessionRows:
    """The unfinished build to resume, or a new, empty table."""
    if registration.building_table and registration.building_version == version:
        return rows_on(app, registration.building_table)
    # The table exists before the registry names it: writes go there at once.
    name = registry.next_build_table(NAME, version)
    table = rows_on(app, name)
    registry.start_build(NAME, name, version)
    if registration.building_table:  # a build of another version: started over
        # Dropped once the registry names the new one (not before: every
        # write would fail on the table it names), and once the writes that
        # read the old name have committed (start_build waited for them).
        rows_on(app, registration.building_table).drop()
    return table


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
