"""A rebuild keeps the objects that existed before it out of the garbage
collector's full collections while it folds (gc.freeze), and leaves the
collector as it found it."""

from __future__ import annotations

import gc

from sessions.projection.rebuild import rebuild
from tests.projection.projection_support import Workload


def test_a_rebuild_freezes_older_objects_while_it_folds_and_unfreezes_them(sqlite_url, apps) -> None:  # type: ignore[no-untyped-def]
    app = apps(sqlite_url)
    Workload(app).run(300, containers=5)
    assert gc.get_freeze_count() == 0
    seen: list[int] = []
    result = rebuild(app, batch_size=50, on_progress=lambda _: seen.append(gc.get_freeze_count()))
    assert result.events > 0 and len(seen) > 2
    assert seen[0] == 0  # (before folding)
    assert min(seen[1:]) > 0  # after each batch: the older objects stayed frozen
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_someone_else_stay_frozen(sqlite_url, apps) -> None:  # type: ignore[no-untyped-def]
    app = apps(sqlite_url)
    Workload(app).run(100, containers=3)
    gc.freeze()
    try:
        rebuild(app)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
