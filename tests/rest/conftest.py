"""REST fixtures: one server per backend per module, serving gRPC and REST
from one process, with real HTTP (httpx) and gRPC clients; and one that
enforces credentials (the access tests' tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from sessions.api.protos import operation_service_pb2_grpc, service_pb2_grpc
from sessions.server import SessionsServer
from tests.access.conftest import Tokens, make_credentials, module_store_url  # noqa: F401 (a fixture)

SESSIONS = "/organization-manager/v1/idp/synchronization-sessions"


@dataclass
class Faces:
    """One server's two faces."""

    server: SessionsServer
    http: httpx.Client
    channel: grpc.Channel

    @property
    def sessions(self) -> service_pb2_grpc.SynchronizationSessionServiceStub:
        return service_pb2_grpc.SynchronizationSessionServiceStub(self.channel)

    @property
    def operations(self) -> operation_service_pb2_grpc.OperationServiceStub:
        return operation_service_pb2_grpc.OperationServiceStub(self.channel)

    def head(self) -> int:
        """The event log's head: what a refused call must leave unchanged."""
        return self.server.app.recorder.max_notification_id() or 0


def _serve(store_url: str, auth_file: Path | None = None, **kwargs: object) -> Iterator[Faces]:
    server = SessionsServer(store_url, "127.0.0.1:0", http_listen="127.0.0.1:0", auth_file=auth_file, **kwargs)  # type: ignore[arg-type]
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30)
    try:
        yield Faces(server, http, channel)
    finally:
        http.close()
        channel.close()
        server.stop(grace=1)


@pytest.fixture(scope="module")
def faces(module_store_url: str) -> Iterator[Faces]:  # noqa: F811
    yield from _serve(module_store_url, max_message_bytes=64 * 1024)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tokens]:
    path = tmp_path_factory.mktemp("auth") / "credentials.json"
    return path, make_credentials(path)


@pytest.fixture(scope="module")
def guarded(module_store_url: str, tokens: tuple[Path, Tokens]) -> Iterator[Faces]:  # noqa: F811
    yield from _serve(module_store_url, auth_file=tokens[0])
