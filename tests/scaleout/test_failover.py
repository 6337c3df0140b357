"""Projector failover with real processes on PostgreSQL: two `sessions
project`, the owner killed (kill -9) or paused and cut off while events are
written; the standby takes over and folds everything exactly once.

The events are written by the test's own application, which writes no rows
with them: every row in the read model is a projector's work, so `projections
verify` being clean at the head means the folds were complete and applied
once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.projection.projection_support import Workload, make_app
from tests.scaleout.scaleout_support import (
    ProjectProcess,
    Writes,
    assert_verified,
    folded_to_head,
    lock_holder,
    roles,
    status,
    terminate,
    wait_for_status,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_kill_9_of_the_owner_under_writes_the_standby_folds_everything_once(postgres_url: str, tmp_path: Path) -> None:
    app = make_app(postgres_url)
    workload = Workload(app)
    workload.run(200)
    first = ProjectProcess(postgres_url, tmp_path / "first.log")
    second = ProjectProcess(postgres_url, tmp_path / "second.log")
    try:
        state = wait_for_status(postgres_url, lambda s: sorted(roles(s).values()) == ["owner", "standby"])
        owner_pid = next(pid for pid, role in roles(state).items() if role == "owner")
        owner, standby = (first, second) if owner_pid == first.pid else (second, first)
        folded_to_head(postgres_url, app)

        with Writes(workload):
            wait_for_status(postgres_url, lambda s: s["head"] > 400)  # (under writes)
            owner.proc.send_signal(signal.SIGKILL)
            owner.proc.wait(10)
            at_kill = status(postgres_url)["live"]["position"]
            state = wait_for_status(postgres_url, lambda s: roles(s) == {standby.pid: "owner"})
            # writes go on after the takeover too
            wait_for_status(postgres_url, lambda s: s["live"]["position"] > at_kill)
        assert state["projectors"][0]["owner_since"]
        folded_to_head(postgres_url, app)
        assert "owns session_snapshots" in standby.log()
        assert_verified(postgres_url)
    finally:
        first.stop()
        second.stop()
        app.close()


def test_an_owner_paused_and_cut_off_never_folds_after_the_takeover(postgres_url: str, tmp_path: Path) -> None:
    # The owner is stopped (SIGSTOP), perhaps inside a batch; its lock
    # connection is terminated; the standby takes over and folds; the old
    # owner, continued (SIGCONT), finds another owner and stands by.
    app = make_app(postgres_url)
    workload = Workload(app)
    workload.run(200)
    old = ProjectProcess(postgres_url, tmp_path / "old.log", "--batch-size", "20")
    try:
        wait_for_status(postgres_url, lambda s: roles(s) == {old.pid: "owner"})
        new = ProjectProcess(postgres_url, tmp_path / "new.log", "--batch-size", "20")
        try:
            wait_for_status(postgres_url, lambda s: roles(s) == {old.pid: "owner", new.pid: "standby"})
            with Writes(workload):
                wait_for_status(postgres_url, lambda s: s["head"] > 300)
                os.kill(old.pid, signal.SIGSTOP)
                holder = lock_holder(postgres_url)
                assert holder is not None
                terminate(postgres_url, holder)
                wait_for_status(postgres_url, lambda s: roles(s).get(new.pid) == "owner")
            folded_to_head(postgres_url, app)
            os.kill(old.pid, signal.SIGCONT)
            wait_for_status(postgres_url, lambda s: roles(s) == {new.pid: "owner", old.pid: "standby"})
            workload.run(100)  # more after the old owner is back: still folded once, by the new one
            folded_to_head(postgres_url, app)
            assert old.proc.poll() is None, old.log()
            assert_verified(postgres_url)
        finally:
            new.stop()
    finally:
        old.stop()
        app.close()
