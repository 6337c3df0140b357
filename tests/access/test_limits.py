"""Limits: message size, calls at once, and client deadlines; each refusal a
clear status."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.domain.enums import SessionType
from sessions.domain.schedule import schedule_id
from sessions.server import SessionsServer
from sessions.transport import server_options
from tests.waiting import wait_until


def _start(tmp_path: Path, **kwargs: object) -> tuple[SessionsServer, grpc.Channel]:
    server = SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    return server, channel


def _open_request(container: str = "c-1") -> service_pb2.OpenSessionRequest:
    return service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="a", session_type=1)


def test_the_defaults_bound_messages_and_calls() -> None:
    options = dict(server_options(4 * 1024 * 1024, 100))
    assert options["grpc.max_receive_message_length"] == 4 * 1024 * 1024
    assert options["grpc.max_send_message_length"] == 4 * 1024 * 1024
    assert options["grpc.max_concurrent_streams"] == 100
    server = SessionsServer("memory://", "127.0.0.1:0")
    assert server.max_concurrent_rpcs == 1024 and server.max_message_bytes == 4 * 1024 * 1024


def test_a_message_over_the_limit_is_resource_exhausted(tmp_path: Path) -> None:
    server, channel = _start(tmp_path, max_message_bytes=1024)
    try:
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListSessions(
                service_pb2.ListSessionsRequest(subject_container_id="c", filter="x" * 2000), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Within the limit the same call is answered (and validated) as usual.
        with pytest.raises(grpc.RpcError) as invalid:
            stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c", filter="x" * 900), timeout=10)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
        server.stop(grace=1)


def test_calls_over_the_bound_are_resource_exhausted_and_deadlines_are_honoured(tmp_path: Path) -> None:
    # An OpenSession waits for its schedule's stream lock, which the test
    # holds: a call that stays in progress for as long as we like.
    server, channel = _start(tmp_path, max_concurrent_rpcs=1, run_projector=False, run_deadlines=False)
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)

    def held(container: str):  # type: ignore[no-untyped-def]
        return server.app.stream_lock(schedule_id(container, SessionType.AD_SYNC))

    try:
        # A client deadline shorter than the wait: DEADLINE_EXCEEDED.
        with held("c-deadline"):
            with pytest.raises(grpc.RpcError) as late:
                stub.OpenSession(_open_request("c-deadline"), timeout=0.3)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        def get_code() -> grpc.StatusCode:
            try:
                stub.GetSession(service_pb2.GetSessionRequest(session_id="ses1"), timeout=5)
            except grpc.RpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        # The server finishes that call (its slot frees) on its own time.
        assert wait_until(lambda: get_code() != grpc.StatusCode.RESOURCE_EXHAUSTED, 10, 0.05)

        with ThreadPoolExecutor(1) as pool:
            with held("c-slow"):
                def call_slowly():  # type: ignore[no-untyped-def]
                    return pool.submit(lambda: stub.OpenSession(_open_request("c-slow"), timeout=10))

                slow = call_slowly()

                def slow_holds_the_slot() -> bool:
                    nonlocal slow
                    if slow.done():
                        # A probe below took the only slot before the slow call
                        # arrived, so the slow call was the one refused: again.
                        error = slow.exception()
                        assert isinstance(error, grpc.RpcError)
                        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        slow = call_slowly()
                        return False
                    return get_code() == grpc.StatusCode.RESOURCE_EXHAUSTED

                # While the slow call holds the only slot, other calls are refused.
                assert wait_until(slow_holds_the_slot, 10, 0.02)
            assert slow.result().done  # answered once the lock is free
        # Once the slot is free, calls are served again.
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetSession(service_pb2.GetSessionRequest(session_id="ses1"), timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
        server.stop(grace=1)
