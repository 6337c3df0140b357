"""Shared fixtures: a store URL per backend, and servers on real channels.

PostgreSQL tests create their own database and drop it afterwards. When the
server is unreachable they fail (CI must not pass without them), unless
SESSIONS_TEST_POSTGRES_OPTIONAL=1 is set, which turns them into skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from sessions.api.protos import operation_service_pb2_grpc, service_pb2_grpc
from sessions.domain.policy import Policy
from sessions.server import SessionsServer
from sessions.store.clock import Clock, system_clock

POSTGRES_ADMIN_URL = os.environ.get(
    "SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

# Servers started by the current test; stopped before its database is dropped.
_running: list[RunningServer] = []


def _stop_running_servers() -> None:
    while _running:
        running = _running.pop()
        running.channel.close()
        running.server.stop(grace=1)


def _postgres_unavailable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as e:
        return str(e).strip()


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    problem = _postgres_unavailable()
    if problem:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {problem}"
        if os.environ.get("SESSIONS_TEST_POSTGRES_OPTIONAL") == "1":
            pytest.skip(message)
        pytest.fail(message + " (set SESSIONS_TEST_POSTGRES_OPTIONAL=1 to skip these tests)")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database, dropped after the test."""
    name = f"sessions_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _stop_running_servers()
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/sessions.db"
    return request.getfixturevalue("postgres_url")


@dataclass
class RunningServer:
    server: SessionsServer
    channel: grpc.Channel
    target: str

    @property
    def sessions(self) -> service_pb2_grpc.SynchronizationSessionServiceStub:
        return service_pb2_grpc.SynchronizationSessionServiceStub(self.channel)

    @property
    def operations(self) -> operation_service_pb2_grpc.OperationServiceStub:
        return operation_service_pb2_grpc.OperationServiceStub(self.channel)


@pytest.fixture
def start_server() -> Iterator:  # type: ignore[type-arg]
    """Start in-process servers on free ports; all are stopped after the test."""
    def start(
        store_url: str,
        *,
        policy: Policy | None = None,
        clock: Clock = system_clock,
        run_projector: bool = True,
        run_deadlines: bool = True,
    ) -> RunningServer:
        server = SessionsServer(
            store_url,
            "127.0.0.1:0",
            policy=policy,
            clock=clock,
            run_projector=run_projector,
            run_deadlines=run_deadlines,
        )
        port = server.start()
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=10)
        running = RunningServer(server, channel, target)
        _running.append(running)
        return running

    yield start
    _stop_running_servers()
