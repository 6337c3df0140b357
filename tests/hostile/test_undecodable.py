"""Requests whose bytes do not decode: INVALID_ARGUMENT naming the request,
on a connection that stays usable, at no cost in the server's memory
(grpcio's own request decoding answers INTERNAL, kills the connection after
about a hundred, and keeps 14-17 KB for each)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sessions.api.protos import SESSION_SERVICE, service_pb2, service_pb2_grpc
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

# Bytes no request message decodes: a bad wire type, a field cut short, a
# varint that never ends, a string that is not UTF-8.
UNDECODABLE = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11, b"\x0a\x02\xc3\x28", b"\x0f"]
METHODS = ["OpenSession", "CloseSession", "ReportSessionProgress", "Heartbeat", "GetSession", "ListSessions"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _send_undecodable(channel: grpc.Channel, count: int) -> None:
    for k in range(count):
        method = METHODS[k % len(METHODS)]
        call = channel.unary_unary(f"/{SESSION_SERVICE}/{method}")  # bytes as they are
        with pytest.raises(grpc.RpcError) as refused:
            call(UNDECODABLE[k % len(UNDECODABLE)], timeout=10)
        error = refused.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        status = rpc_status.from_call(error)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "request"


def test_undecodable_requests_are_refused_on_a_connection_that_stays_usable(
    store_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(store_url, tmp_path / "server.log")
    try:
        server.wait_serving()
        channel = server.channel
        api = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
        _send_undecodable(channel, 200)
        # The same channel (one connection) still serves a valid call.
        opened = api.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1),
            timeout=10,
        )
        assert opened.done

        # Memory: after a warm-up, a thousand more leave the server's RSS
        # where it was (grpcio's decoding kept about 15 MB for as many).
        rss_before = _rss_kib(server.proc.pid)
        _send_undecodable(channel, 1000)
        grown = _rss_kib(server.proc.pid) - rss_before
        assert grown < 4096, f"the server grew by {grown} KiB over 1000 undecodable requests"
        assert api.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c2", agent_id="a", session_type=1),
            timeout=10,
        ).done
        assert "Exception deserializing" not in server.log()
    finally:
        server.stop()
