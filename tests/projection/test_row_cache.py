"""The read model's row cache never keeps a row that a batch changed."""

from __future__ import annotations

from sessions.projection.read_model import RowCache
from sessions.projection.snapshots import ServedRow

OLD = ServedRow(b"old", 1, 10)
NEW = ServedRow(b"new", 1, 20)


def test_a_row_read_before_a_batch_landed_is_not_kept() -> None:
    cache = RowCache()
    epoch = cache.epoch  # a request starts reading the store...
    cache.changed({"s1"})  # ...a batch changes the row meanwhile...
    cache.keep("s1", OLD, epoch)  # ...so what it read may be old: not kept
    assert cache.get("s1") is None
    cache.keep("s1", NEW, cache.epoch)
    assert cache.get("s1") == NEW


def test_a_batch_drops_the_rows_it_changed_and_only_those() -> None:
    cache = RowCache()
    cache.keep("s1", OLD, cache.epoch)
    cache.keep("s2", OLD, cache.epoch)
    cache.changed({"s1"})
    assert cache.get("s1") is None and cache.get("s2") == OLD
    cache.changed(set())  # a new table, or rows changed outside the projector
    assert cache.get("s2") is None


def test_the_cache_is_bounded() -> None:
    cache = RowCache(size=3)
    for i in range(5):
        cache.keep(f"s{i}", OLD, cache.epoch)
    assert [cache.get(f"s{i}") for i in range(5)] == [None, None, OLD, OLD, OLD]
