"""Servers for the listing tests: in-process, on free ports, with the deadline
worker off, so a session past its expires_at stays stored OPENED/PENDING and
only read-time expiry shows it EXPIRED (what the filters must respect)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from sessions.domain.policy import Policy
from sessions.server import SessionsServer
from sessions.store.clock import Clock, system_clock
from tests.conftest import RunningServer


@pytest.fixture
def listing_server(store_url: str) -> Iterator:  # type: ignore[type-arg]
    """start(policy=..., clock=...) -> RunningServer on this test's store
    (parametrized over SQLite and PostgreSQL by ``store_url``); stopped
    before the store is dropped."""
    started: list[RunningServer] = []

    def start(*, policy: Policy | None = None, clock: Clock = system_clock) -> RunningServer:
        server = SessionsServer(
            store_url, "127.0.0.1:0", policy=policy, clock=clock, run_deadlines=False
        )
        port = server.start()
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=10)
        running = RunningServer(server, channel, target)
        started.append(running)
        return running

    yield start
    while started:
        running = started.pop()
        running.channel.close()
        running.server.stop(grace=1)
