"""How commands use the library's aggregate cache: optimistically.

Aggregates stay cached between commands, and a command decides on the
cached copy without asking the store whether another process appended to
the stream since (the library's fast-forward, a read per command; it is
turned off in store.urls). That is safe because of optimistic concurrency:
a command on a stale copy writes the version another process already wrote,
its save collides and writes nothing, and the command runs again on state
caught up from the store. What a collision cannot catch is read fresh
(``fresh_reads``): the application says where (store.application).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from copy import deepcopy
from typing import Any

from eventsourcing.application import Application, ProcessingEvent, project_aggregate

from sessions.domain.base import Aggregate


class CachedAggregates(Application[str]):
    """Loads and saves of the application's commands (a base class)."""

    def __init__(self, **kwargs: Any):
        # Whether loads in this thread catch up with the store first.
        self._reads = threading.local()
        super().__init__(**kwargs)

    @contextmanager
    def fresh_reads(self, fresh: bool = True) -> Iterator[None]:
        """Loads in this thread catch up with the store while inside (or
        not, with ``fresh=False``); nested uses keep the outer setting."""
        outer = getattr(self._reads, "fresh", False)
        self._reads.fresh = outer or fresh
        try:
            yield
        finally:
            self._reads.fresh = outer

    def load(self, aggregate_id: str, version: int | None = None) -> Any:
        """The repository's aggregate (a copy of the cached one, unless at a
        version), caught up with the store first inside ``fresh_reads``."""
        if version is None and getattr(self._reads, "fresh", False):
            self._catch_up(aggregate_id)
        return self.repository.get(aggregate_id, version=version)

    def _catch_up(self, aggregate_id: str) -> None:
        """Bring the cached copy of an aggregate up to the store: fold in the
        events that other processes appended since this one last saw it."""
        cache = self.repository.cache
        if cache is None:
            return
        try:
            cached = cache.get(aggregate_id)
        except KeyError:
            return  # not cached: the load reads the whole stream
        newer = list(self.repository.event_store.get(originator_id=aggregate_id, gt=cached.version))
        if newer:
            # Folded into a copy: a command may be holding the cached object.
            # (A save in another thread may put a newer copy meanwhile, which
            # this one then replaces; at worst a later command collides once.)
            cache.put(aggregate_id, project_aggregate(deepcopy(cached), newer))

    def uncache(self, aggregate_id: str) -> None:
        cache = self.repository.cache
        if cache is not None:
            with suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def save_aggregates(self, aggregates: Sequence[Aggregate], **kwargs: Any) -> list[Any]:
        """The library's ``save`` for what commands save (aggregates, never
        bare events), through the same steps, without its per-object
        runtime Protocol checks (slow in Python 3.11, several per command).
        The library puts each saved aggregate in the cache (fast-forward
        being off)."""
        processing = ProcessingEvent[str]()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings
