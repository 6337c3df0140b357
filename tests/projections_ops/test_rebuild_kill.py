"""SIGKILL of `sessions projections rebuild` part way: the live read model
is untouched and keeps serving; running the rebuild again resumes the
unfinished build from its tracking position and the result verifies."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import timedelta

from sessions.api.protos import service_pb2, session_pb2
from sessions.projection.projector import Projector
from sessions.projection.registry import Registry
from sessions.projection.row_tables import open_rows, rows_on
from sessions.projection.rows import NAME, SessionRows
from sessions.projection.verify import differences
from sessions.store.clock import ManualClock
from sessions.wire import session_bytes
from tests.projection.projection_support import POLICY, Workload, head
from tests.waiting import wait_until

from .ops_support import described, rows_of, sessions_command, table_exists


def test_kill_9_during_rebuild_leaves_the_live_model_serving_and_the_next_run_resumes(
    store_url, start_server, apps, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    app = apps(store_url)
    workload = Workload(app)
    workload.bulk(sessions=100, rounds=25)
    log_head = head(app)
    assert log_head > 2500
    live = open_rows(app)
    Projector(app, live, batch_size=2000).catch_up()
    rows_before = rows_of(app, live.table)
    registry = Registry.of(app)
    before = registry.get(NAME)
    server = start_server(store_url, clock=ManualClock(workload.clock() + timedelta(seconds=1)), policy=POLICY)

    output = (tmp_path / "rebuild.out").open("wb")
    rebuilding = subprocess.Popen(
        [sys.executable, "-m", "sessions", "projections", "rebuild", "--store", store_url, "--batch-size", "50"],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    building: list[SessionRows] = []

    def part_way() -> bool:
        if rebuilding.poll() is not None:
            raise AssertionError(
                f"the rebuild ended (exit {rebuilding.returncode}) before it could be killed:\n"
                + (tmp_path / "rebuild.out").read_text(errors="replace")[-3000:]
            )
        table = registry.get(NAME).building_table
        # Until the rebuild has created its table, creating it here too would
        # race with it (on SQLite: "database is locked" at once).
        if table is None or not table_exists(app, table):
            return False
        if not building or building[0].table != table:
            building[:] = [rows_on(app, table)]
        return 0 < building[0].position() < log_head

    try:
        assert wait_until(part_way, 60, interval=0.005)
        rebuilding.send_signal(signal.SIGKILL)
        assert rebuilding.wait(10) == -signal.SIGKILL
    finally:
        if rebuilding.poll() is None:
            rebuilding.kill()
            rebuilding.wait()
        output.close()

    killed_at = building[0].position()
    assert 0 < killed_at < log_head
    # The live read model is as it was, and still serves.
    after = registry.get(NAME)
    assert (after.live_table, after.live_version) == (before.live_table, before.live_version)
    assert after.building_table == building[0].table  # the unfinished build, to resume
    assert rows_of(app, live.table) == rows_before
    assert server.server.read_model.live_table == live.table
    for session_id in list(workload.expected)[::7]:
        answer = server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session
        assert answer == session_pb2.SynchronizationSession.FromString(rows_before[session_id][1])
        assert answer.SerializeToString(deterministic=True) == session_bytes(app.get_session(session_id))

    # Again, to the end (the server gone, so the old table goes at once): it
    # resumes where the killed run's last batch committed.
    server.channel.close()
    server.server.stop(grace=1)
    finished = sessions_command("projections", "rebuild", "--store", store_url, "--batch-size", "500", cwd=tmp_path)
    assert finished.returncode == 0, described(finished)
    resumed = re.search(r"resumed from position (\d+)", finished.stdout)
    assert resumed, described(finished)
    assert killed_at <= int(resumed[1]) < log_head
    assert f"dropped {live.table}" in finished.stdout

    now = registry.get(NAME)
    assert now.live_table == building[0].table and now.building_table is None
    rebuilt = rows_on(app, now.live_table)
    assert rebuilt.position() == log_head
    assert list(differences(app, rebuilt)) == []
    assert rows_of(app, rebuilt.table) == rows_before
    assert not table_exists(app, live.table)
