"""The deadline worker with an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

from sessions.api.operations import renderer
from sessions.api.protos import operation_pb2, service_pb2
from sessions.deadlines import DeadlineWorker
from sessions.domain.commands import Heartbeat, OpenSession
from sessions.domain.enums import SessionStatus, SessionType
from sessions.domain.policy import Policy
from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from sessions.store.application import Caller, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url
from sessions.wire import micros

POLICY = Policy.from_seconds(session_ttl=60, heartbeat_grace=20, sync_interval=1)
AGENT = Caller("agent")


class World:
    """An application, its read model, a projector and a worker, on one clock."""

    def __init__(self, store_url: str, clock: ManualClock):
        self.clock = clock
        self.app = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
        self.view = open_rows(self.app)
        self.projector = Projector(self.app, self.view)
        self.worker = DeadlineWorker(self.app, self.view)

    def open(self, container: str = "c1") -> str:
        outcome = self.app.execute(
            OpenSession(container, "a1", SessionType.AD_SYNC), AGENT, renderer("OpenSession", "agent")
        )
        self.projector.catch_up()
        opened = service_pb2.OpenSessionResponse()
        operation_pb2.Operation.FromString(outcome.payload).response.Unpack(opened)
        return opened.opened_session.session_id

    def heartbeat(self, session_id: str) -> None:
        self.app.execute(Heartbeat(session_id), AGENT, renderer("Heartbeat", "agent"))
        self.projector.catch_up()

    def sweep(self):  # type: ignore[no-untyped-def]
        result = self.worker.sweep()
        self.projector.catch_up()
        return result

    def history(self, session_id: str) -> list[tuple[str, object]]:
        return [(type(e).__name__, e.timestamp) for e in self.app.events.get(session_id)]

    def close(self) -> None:
        self.app.close()


def test_left_alone_a_session_stalls_then_expires_and_the_next_open_is_full(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    try:
        sid = world.open()
        start = clock()
        clock.advance(19)
        assert (world.sweep().stalled, world.app.get_session(sid).status) == (0, SessionStatus.OPENED)
        clock.advance(1)
        assert world.sweep().stalled == 1
        assert world.app.get_session(sid).status == SessionStatus.PENDING
        assert world.sweep().stalled == 0  # recorded once

        clock.advance(40)
        swept = world.sweep()
        assert (swept.expired, swept.stalled) == (1, 0)
        session = world.app.get_session(sid)
        assert session.status == SessionStatus.EXPIRED
        assert session.closed_at == start + timedelta(seconds=60)
        assert session.fail_reason
        assert world.history(sid) == [
            ("SessionOpened", start),
            ("SessionStalled", start + timedelta(seconds=20)),
            ("SessionExpired", start + timedelta(seconds=60)),
        ]
        assert world.sweep().expired == 0

        clock.advance(1)
        opened = world.app.execute(OpenSession("c1", "a1", SessionType.AD_SYNC), AGENT, lambda *a: repr(a[2]).encode())
        assert b"SUCCESS" in opened.payload and b"FULL_SYNC" in opened.payload
    finally:
        world.close()


def test_a_heartbeat_after_a_stall_reopens_and_extends(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    try:
        sid = world.open()
        clock.advance(25)
        world.sweep()
        assert world.app.get_session(sid).status == SessionStatus.PENDING
        world.heartbeat(sid)
        session = world.app.get_session(sid)
        assert session.status == SessionStatus.OPENED
        assert session.expires_at == clock() + POLICY.session_ttl
        clock.advance(50)  # past the first expires_at, inside the new one
        assert world.sweep().expired == 0
        assert world.app.get_session(sid).status == SessionStatus.PENDING
    finally:
        world.close()


def test_expiry_racing_a_heartbeat_never_expires_a_live_session(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    other = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
    try:
        sid = world.open()
        clock.advance(59)
        world.app.get_session(sid)  # the worker's process has the session cached
        # Another process heartbeats, then the clock passes the old expires_at.
        other.execute(Heartbeat(sid), AGENT, renderer("Heartbeat", "agent"))
        clock.advance(2)
        assert world.app.expire_session(sid) == 0
        assert world.app.get_session(sid).status == SessionStatus.OPENED
    finally:
        other.close()
        world.close()


def test_two_workers_racing_record_each_expiry_once(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    second = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
    second_worker = DeadlineWorker(second, open_rows(second))
    try:
        ids = [world.open(f"c{i}") for i in range(20)]
        clock.advance(61)
        results = []
        barrier = threading.Barrier(2)

        def run(worker: DeadlineWorker) -> None:
            barrier.wait()
            results.append(worker.sweep())

        threads = [threading.Thread(target=run, args=(w,)) for w in (world.worker, second_worker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.expired for r in results) == 20
        for sid in ids:
            names = [name for name, _ in world.history(sid)]
            assert names.count("SessionExpired") == 1
            assert names[-1] == "SessionExpired"
    finally:
        second.close()
        world.close()


def test_a_restarted_worker_finishes_what_a_stopped_one_left(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    try:
        ids = [world.open(f"c{i}") for i in range(5)]
        clock.advance(61)
        # The first worker expires two sessions, then its process dies.
        for sid in ids[:2]:
            assert world.app.expire_session(sid) > 0
        world.projector.catch_up()
    finally:
        world.close()

    restarted = World(store_url, clock)
    try:
        swept = restarted.sweep()
        assert swept.expired == 3
        for sid in ids:
            assert restarted.app.get_session(sid).status == SessionStatus.EXPIRED
        assert restarted.sweep().expired == 0
    finally:
        restarted.close()


def test_the_worker_only_visits_due_sessions(store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    world = World(store_url, clock)
    try:
        quiet = world.open("quiet")
        clock.advance(10)
        busy = world.open("busy")
        clock.advance(12)  # quiet silent for 22 s, busy for 12 s
        assert world.view.due_to_stall(micros(clock() - POLICY.heartbeat_grace), 100) == [quiet]
        assert world.view.due_to_expire(micros(clock()), 100) == []
        assert busy not in world.view.due_to_stall(micros(clock() - POLICY.heartbeat_grace), 100)
    finally:
        world.close()
