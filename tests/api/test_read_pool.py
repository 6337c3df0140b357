"""Reads on threads of their own (--read-threads): GetSession and
ListSessions run on the server's read pool, every other call on the main
pool, also behind the metrics and access-control wrappers (which must keep
the pool grpcio looks for on the behavior they wrap). grpcio's per-method
executor is an experimental hook: these tests are what notices if an
upgrade drops it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessions import credentials
from sessions.api.protos import SESSION_SERVICE, service_pb2, service_pb2_grpc
from sessions.server import SessionsServer


class Served:
    """A server that notes the thread each method's work ran on (the reads
    and the write themselves are the real ones)."""

    def __init__(self, tmp_path: Path, **kwargs: Any):
        self.server = SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0", **kwargs)
        port = self.server.start()
        self.threads: dict[str, str] = {}
        read_model, app = self.server.read_model, self.server.app
        read_model.get = self._noted("GetSession", read_model.get)  # type: ignore[method-assign]
        read_model.list_page = self._noted("ListSessions", read_model.list_page)  # type: ignore[method-assign]
        app.execute = self._noted("OpenSession", app.execute)  # type: ignore[method-assign]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = service_pb2_grpc.SynchronizationSessionServiceStub(self.channel)

    def _noted(self, method: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def noted(*args: Any) -> Any:
            self.threads[method] = threading.current_thread().name
            return call(*args)

        return noted

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=1)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(**kwargs: Any) -> Served:
        served = Served(tmp_path, **kwargs)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def _calls(served: Served, metadata: list[tuple[str, str]]) -> dict[str, str]:
    """An open, a listing that finds it and a read of it: the thread each ran on."""
    stub = served.stub
    stub.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id="c1", agent_id="agent-1", session_type=1),
        metadata=metadata,
    )
    listed = stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c1"), metadata=metadata)
    assert len(listed.sessions) == 1
    got = stub.GetSession(service_pb2.GetSessionRequest(session_id=listed.sessions[0].session_id), metadata=metadata)
    assert got.session.session_id == listed.sessions[0].session_id
    return served.threads


def test_reads_run_on_the_read_pool(serve: Callable[..., Served]) -> None:
    served = serve(read_threads=2, max_workers=3)
    threads = _calls(served, [])
    assert threads["GetSession"].startswith("grpc-read"), threads
    assert threads["ListSessions"].startswith("grpc-read"), threads
    assert not threads["OpenSession"].startswith("grpc-read"), threads


def test_without_a_read_pool_reads_share_the_servers(serve: Callable[..., Served]) -> None:
    served = serve(read_threads=0, max_workers=3)
    threads = _calls(served, [])
    assert len(threads) == 3
    assert not any(name.startswith("grpc-read") for name in threads.values()), threads


def test_metrics_and_access_control_keep_the_read_pool(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    auth = tmp_path / "credentials"
    admin = credentials.add_token(auth, "admin", name="ops")[0]
    served = serve(read_threads=1, auth_file=auth, metrics_listen="127.0.0.1:0")
    threads = _calls(served, [("authorization", f"Bearer {admin}")])
    assert threads["GetSession"].startswith("grpc-read"), threads
    assert threads["ListSessions"].startswith("grpc-read"), threads
    assert not threads["OpenSession"].startswith("grpc-read"), threads


def test_silent_callers_without_credentials_hold_no_thread(serve: Callable[..., Served], tmp_path: Path) -> None:
    # Calls that send their metadata but never their request (a unary call
    # whose request stream stays silent): refused by their metadata alone,
    # they hold no thread, of the reads' pool or the server's, and a caller
    # with credentials is served beside them.
    auth = tmp_path / "credentials"
    reader = credentials.add_token(auth, "reader", name="dash")[0]
    served = serve(read_threads=1, max_workers=2, auth_file=auth)
    silent = served.channel.stream_unary(
        f"/{SESSION_SERVICE}/GetSession",
        request_serializer=service_pb2.GetSessionRequest.SerializeToString,
        response_deserializer=service_pb2.GetSessionResponse.FromString,
    )
    release = threading.Event()

    def never_sent() -> Iterator[service_pb2.GetSessionRequest]:
        release.wait(60)
        return
        yield

    try:
        calls = [silent.future(never_sent(), timeout=60, metadata=metadata)
                 for metadata in ([], [("authorization", "Bearer nope")]) * 3]
        for call in calls:
            error = call.exception(timeout=15)
            assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        with pytest.raises(grpc.RpcError) as read:
            served.stub.GetSession(service_pb2.GetSessionRequest(session_id="ses" + "0" * 20),
                                   metadata=[("authorization", f"Bearer {reader}")], timeout=15)
        assert read.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    finally:
        release.set()
