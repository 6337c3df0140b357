"""`sessions projections status`: position, head, lag in events and in
seconds and state, before, during and after catching up, and
while a rebuild is under way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sessions.projection.projector import Projector
from sessions.projection.registry import Registry
from sessions.projection.row_tables import open_rows, rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version
from sessions.projection.status import BEHIND_EVENTS, read_model_status
from sessions.store.clock import ManualClock
from tests.projection.projection_support import Workload, head

from .ops_support import described, sessions_command

HOUR = 3600.0


def test_status_numbers_before_during_and_after_catching_up(store_url, apps) -> None:  # type: ignore[no-untyped-def]
    # The log was written an hour ago (the workload's clock), within a few minutes.
    app = apps(store_url, ManualClock(datetime.now(UTC) - timedelta(seconds=HOUR)))
    workload = Workload(app)
    workload.bulk(sessions=40, rounds=30)
    log_head = head(app)
    assert log_head > BEHIND_EVENTS + 200
    span = (workload.clock() - (datetime.now(UTC) - timedelta(seconds=HOUR))).total_seconds()
    assert span < 300

    status = read_model_status(app)
    assert (status.name, status.code_version, status.head) == (NAME, code_version(NAME), log_head)
    assert (status.live.position, status.live.lag_events, status.live.parked) == (0, log_head, 0)
    assert HOUR - 10 <= status.live.lag_seconds <= HOUR + 60
    assert status.state == "behind"  # more than BEHIND_EVENTS to fold
    assert status.building is None and status.advice == ""

    view = open_rows(app)
    projector = Projector(app, view, batch_size=100)
    while head(app) - projector.position > BEHIND_EVENTS:
        projector.run_batch()
    status = read_model_status(app)
    assert 0 < status.live.position == projector.position < log_head
    assert status.live.lag_events == log_head - projector.position
    assert HOUR - span - 10 <= status.live.lag_seconds <= HOUR + 60
    assert status.state == "live"  # behind, but within BEHIND_EVENTS

    projector.catch_up()
    status = read_model_status(app)
    assert (status.live.position, status.live.lag_events, status.live.lag_seconds) == (log_head, 0, 0.0)
    assert (status.state, status.advice) == ("live", "")

    # New writes: lag is exactly what was written since.
    workload.report(workload.open_ids[0])
    workload.heartbeat(workload.open_ids[1])
    status = read_model_status(app)
    assert status.head == head(app) > log_head
    assert status.live.position == log_head
    assert status.live.lag_events == head(app) - log_head
    assert status.live.lag_seconds >= HOUR - span - 10
    projector.catch_up()
    assert read_model_status(app).live.lag_events == 0


def test_status_while_a_rebuild_is_under_way(store_url, apps) -> None:  # type: ignore[no-untyped-def]
    app = apps(store_url)
    workload = Workload(app)
    workload.run(200, containers=5)
    live = open_rows(app)
    Projector(app, live).catch_up()
    registry = Registry.of(app)
    table = registry.next_build_table(NAME, code_version(NAME))
    building = rows_on(app, table)
    registry.start_build(NAME, table, code_version(NAME))
    partial = Projector(app, building, batch_size=100)
    partial.run_batch()
    partial.run_batch()

    status = read_model_status(app)
    log_head = head(app)
    assert status.state == "rebuilding"
    assert (status.live.table, status.live.position, status.live.lag_events) == (live.table, log_head, 0)
    assert status.building is not None
    assert (status.building.table, status.building.version) == (table, code_version(NAME))
    assert status.building.position == partial.position > 0
    assert status.building.lag_events == log_head - partial.position

    shown = sessions_command("projections", "status", "--json", "--store", store_url)
    assert shown.returncode == 0, described(shown)
    document = json.loads(shown.stdout)
    assert document["state"] == "rebuilding" and document["head"] == log_head
    assert document["live"]["position"] == log_head and document["live"]["lag_events"] == 0
    assert document["building"]["table"] == table
    assert document["building"]["position"] == partial.position
    assert document["building"]["lag_events"] == log_head - partial.position

    table_view = sessions_command("projections", "status", "--store", store_url)
    assert table_view.returncode == 0, described(table_view)
    assert "state: rebuilding" in table_view.stdout
