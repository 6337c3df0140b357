"""The group's scrape (`serve --workers N --metrics-listen`) reads the
projectors without DDL: the tables are created once, when the parent opens
its store, so a scrape never queues behind a holder of the schema lock.
And the group's directory does not outlive a parent killed with SIGKILL
beyond the next group's start."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sessions.metrics import GroupMetrics
from sessions.metrics.group import DIRECTORY_PREFIX, remove_stale_directories
from sessions.projection.registry import Registry
from sessions.store.base import SCHEMA_LOCK_KEY
from tests.projection.projection_support import make_app
from tests.waiting import wait_until


@pytest.mark.postgres
def test_a_scrape_does_not_wait_for_the_schema_lock(postgres_url: str) -> None:
    def open_store() -> tuple[Any, Any]:
        app = make_app(postgres_url)
        return app, Registry.of(app)

    metrics = GroupMetrics(open_store, lambda: 2**22 + 1)  # (a pid: the projectors are read; none is it)
    holder = psycopg.connect(postgres_url, autocommit=True)
    try:
        first = metrics.registry.get_sample_value("sessions_projector_owner")
        assert first == 0.0  # the store opened (and the tables created) here
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        scraped: list[float | None] = []
        scrape = threading.Thread(
            target=lambda: scraped.append(metrics.registry.get_sample_value("sessions_projector_owner")),
            daemon=True,
        )
        scrape.start()
        # A scrape that took the schema lock would wait here until released.
        assert wait_until(lambda: bool(scraped), 20, 0.05), "the scrape waited for the schema lock"
        assert scraped == [0.0]
    finally:
        holder.close()  # (releases the lock: a waiting scrape ends)
        metrics.close()


def test_a_directory_left_by_a_killed_parent_goes_at_the_next_start(tmp_path: Path) -> None:
    dead_pid = _exited_pid()
    left = tmp_path / f"{DIRECTORY_PREFIX}{dead_pid}-abc"
    live = tmp_path / f"{DIRECTORY_PREFIX}{os.getpid()}-def"
    other = tmp_path / "sessions-metrics-notapid"
    for folder in (left, live, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")
    assert remove_stale_directories(str(tmp_path)) == [left.name]
    assert not left.exists() and live.exists() and other.exists()


def _exited_pid() -> int:
    """A pid no process has now: a child that exited and was reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
