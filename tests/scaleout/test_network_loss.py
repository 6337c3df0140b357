"""Projector failover when the owner loses its network (not its process):
the owning `sessions project` runs in a network namespace of its own,
reaching a PostgreSQL of the test's own over a veth pair; a standby runs
here. The owner's link is cut under writes: nothing tells the server, which
hears silence. The server ends the owner's backend within the bound its
settings give (projection.ownership: SILENCE), the standby, waiting in the
lock, takes over, and everything is folded exactly once. The link comes
back: the old owner finds its session gone, stands by, and never takes or
commits again (the generation fence).

The events are written by the test's own application, which writes no rows
with them: every row in the read model is a projector's work, so `projections
verify` being clean at the head means the folds were complete and applied
once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sessions.projection.ownership import SILENCE, SILENCE_BOUND
from sessions.projection.rows import NAME
from tests.own_postgres import OwnPostgres, own_postgres
from tests.projection.projection_support import Workload, make_app
from tests.scaleout.netns import Netns, network_namespace
from tests.scaleout.scaleout_support import (
    ProjectProcess,
    Writes,
    assert_verified,
    folded_to_head,
    lock_holder,
    roles,
    wait_for_status,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def lossy() -> Iterator[tuple[Netns, OwnPostgres]]:
    """A network namespace, and a PostgreSQL listening on this side of its
    link (the machine's server, on 127.0.0.1, is out of the namespace's reach)."""
    with network_namespace() as ns:
        hba = f"local all all trust\nhost all all {ns.host_addr}/30 trust\n"
        with own_postgres(host=ns.host_addr, hba=hba) as pg:
            yield ns, pg


def generation(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT generation FROM projector_generations WHERE name = %s", (NAME,)).fetchone()
    assert row is not None
    return int(row[0])


def test_an_owner_cut_off_the_network_is_replaced_within_the_bound_and_never_commits_again(
    lossy: tuple[Netns, OwnPostgres], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, pg = lossy
    url = pg.url()
    app = make_app(url)
    workload = Workload(app)
    workload.run(200)
    old = ProjectProcess(url, tmp_path / "old.log", "--batch-size", "20", prefix=ns.run_in())
    new: ProjectProcess | None = None
    try:
        wait_for_status(url, lambda s: roles(s) == {old.pid: "owner"})
        new = ProjectProcess(url, tmp_path / "new.log", "--batch-size", "20")
        wait_for_status(url, lambda s: roles(s) == {old.pid: "owner", new.pid: "standby"})
        folded_to_head(url, app)
        old_backend = lock_holder(url)
        taken_by = generation(url)

        with Writes(workload):
            wait_for_status(url, lambda s: s["head"] > 400)  # (under writes)
            cut = time.monotonic()
            ns.cut()
            # The lock goes to the standby once the server has ended the
            # owner's backend: no timing is asserted, only reported.
            assert wait_until(lambda: lock_holder(url) not in (None, old_backend), 60, interval=0.01), old.log()
            lock_taken = time.monotonic() - cut
            assert wait_until(lambda: generation(url) > taken_by, 60, interval=0.01)
            owning = time.monotonic() - cut
            # status names the new owner; the old one is gone from it (the
            # server ended its session), though its process runs on.
            state = wait_for_status(url, lambda s: roles(s) == {new.pid: "owner"})
            assert state["projectors"][0]["owner_since"]
            at_takeover = state["live"]["position"]
            wait_for_status(url, lambda s: s["live"]["position"] > at_takeover)  # the new owner folds
        assert old.proc.poll() is None, old.log()
        folded_to_head(url, app)
        assert_verified(url)
        taken_over = generation(url)

        # The old owner's check fails once its client-side timeout fires:
        # seen before the link is back, or the line would depend on timing.
        assert wait_until(lambda: "lost ownership of session_snapshots" in old.log(), 60, 0.1), old.log()
        ns.restore()
        # The old owner finds its lock connection gone, connects again and
        # waits for the lock: a standby.
        wait_for_status(url, lambda s: roles(s) == {new.pid: "owner", old.pid: "standby"})
        workload.run(100)  # more after the old owner is back: folded once, by the new owner
        folded_to_head(url, app)
        assert_verified(url)
        assert generation(url) == taken_over  # the old owner never took it back
        assert roles(wait_for_status(url, lambda s: True)) == {new.pid: "owner", old.pid: "standby"}
        assert "owns session_snapshots (generation" in new.log()
        # the old owner noticed (its check failed) and waits for the lock
        assert "lost ownership of session_snapshots" in old.log(), old.log()
        assert "owned by another process; standing by" in old.log(), old.log()
        with capsys.disabled():
            print(
                f"\n[network loss] the standby held the lock {lock_taken:.2f} s after the owner's link was cut,"
                f" owned (generation {taken_over}) at {owning:.2f} s; bound: {SILENCE_BOUND:g} s of silence"
                f" ({', '.join(f'{k}={v}' for k, v in SILENCE.items())}) plus the takeover"
            )
    finally:
        if new is not None:
            new.stop()
        old.stop()
        app.close()
