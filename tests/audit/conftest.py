"""Servers for the audit tests: in-process, on free ports, with the deadline
worker off, so that a stall is recorded only when a test asks for it and a
session past its expires_at stays stored OPENED (read-time expiry only)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from sessions.domain.policy import Policy
from sessions.server import SessionsServer
from sessions.store.clock import Clock
from tests.conftest import RunningServer


@pytest.fixture
def quiet_server(store_url: str) -> Iterator:  # type: ignore[type-arg]
    """start(clock=..., policy=...) -> RunningServer on this test's store
    (SQLite or PostgreSQL by ``store_url``); stopped before the store is
    dropped, since this fixture depends on it."""
    started: list[RunningServer] = []

    def start(*, clock: Clock, policy: Policy | None = None) -> RunningServer:
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
