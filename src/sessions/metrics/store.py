"""The store's and the read model's figures, read when scraped."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("sessions.metrics")


class StoreCollector(Collector):
    """The store's and the read model's figures, read when scraped: the head
    of the log, the live read model's position, lag and parked events, and
    whether the store answered. Cheap queries (maxima, one row, a count of
    parked events); an error makes ``sessions_store_up`` 0, never a failed
    scrape."""

    def __init__(self, app: Any, registry: Any):
        self.app = app
        self.registry = registry

    def describe(self) -> Iterable[Any]:
        # Names only: registering must not query the store.
        return [family for family, _ in self._families()]

    def collect(self) -> Iterable[Any]:
        (up, _), *rest = self._families()
        values = self._read() if not self.app.store_health.down else None
        up.add_metric([], 1.0 if values is not None else 0.0)
        yield up
        if values is None:
            return
        for family, key in rest:
            family.add_metric([], values[key])
            yield family

    def _read(self) -> dict[str, float] | None:
        from sessions.projection.row_tables import rows_named
        from sessions.projection.rows import NAME
        from sessions.projection.status import lag_seconds

        try:
            live = self.registry.get(NAME).live_table
            view = rows_named(self.app, live)
            position = view.position()
            head = self.app.recorder.max_notification_id() or 0
            lag = lag_seconds(self.app, position) if head > position else 0.0
            parked = view.parked_count()
        except Exception:  # noqa: BLE001 - said as sessions_store_up 0
            log.debug("metrics: cannot read the store", exc_info=True)
            return None
        return {
            "head": float(head),
            "position": float(position),
            "lag_events": float(max(head - position, 0)),
            "lag_seconds": math.nan if lag is None else lag,
            "parked": float(parked),
        }

    @staticmethod
    def _families() -> list[tuple[GaugeMetricFamily, str]]:
        return [
            (GaugeMetricFamily("sessions_store_up", "1 if the store answered this scrape, else 0."), "up"),
            (
                GaugeMetricFamily(
                    "sessions_log_head_position", "Notification id of the last event in the store's log."
                ),
                "head",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_position", "Position of the log the live read model has folded."
                ),
                "position",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_lag_events", "Events in the log the live read model has not folded."
                ),
                "lag_events",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_lag_seconds",
                    "Age of the oldest event the live read model has not folded (0: caught up; NaN: "
                    "its time cannot be read).",
                ),
                "lag_seconds",
            ),
            (GaugeMetricFamily("sessions_parked_events", "Events the live read model's projector parked."), "parked"),
        ]
