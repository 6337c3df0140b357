"""The baseline of the GetSession QPS figure: a bare grpcio server.

A tiny servicer, registered with the generated
``add_SynchronizationSessionServiceServicer_to_server``, answers every
GetSession with one constant, fully populated session (every field set:
three progress entries of six counts each, closed_at, fail_reason). No
store, no read model, no validation: what is left is gRPC itself, the same
threading model as the service (a sync ``grpc.server`` on a thread pool,
32 threads by default, ``--max-workers``; the service's transport options)
and the response's serialization. The suite runs it with 4, 8 and 32
workers and as a ``grpc.aio`` server (``--aio``: one event loop, no thread
pool) and takes the fastest as the baseline. ``--reuse-port`` lets several
of them share one port (SO_REUSEPORT, as ``serve --workers N``): the
machine's own ceiling for N processes.

Run as a subprocess (the suite does):

    .venv/bin/python bench/bare_server.py --listen 127.0.0.1:PORT

It serves the standard health service (SERVING at once) so that callers can
wait for it as for the real server, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from sessions.api.protos import SESSION_SERVICE, service_pb2, service_pb2_grpc, session_pb2
from sessions.transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    server_options,
)

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, microseconds
FAIL_REASON = "the agent gave up: directory unreachable"


def populated_session(session_id: str = "ses" + "0" * 17) -> session_pb2.SynchronizationSession:
    """A finished (FAILED) session with every field set: all three object
    types, each with all six change types."""
    message = session_pb2.SynchronizationSession(
        session_id=session_id,
        agent_id="bench-agent",
        sync_mode=session_pb2.FULL_SYNC,
        status=session_pb2.FAILED,
        session_type=1,
        fail_reason=FAIL_REASON,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=object_type,
                change_info=[
                    session_pb2.ChangeInfo(change_type=change_type, successful=1000 + change_type, failed=change_type)
                    for change_type in range(1, 7)
                ],
            )
            for object_type in (1, 2, 3)
        ],
    )
    message.created_at.FromMicroseconds(T0)
    message.expires_at.FromMicroseconds(T0 + 600_000_000)
    message.closed_at.FromMicroseconds(T0 + 300_000_000)
    return message


class BareSessionService(service_pb2_grpc.SynchronizationSessionServiceServicer):
    def __init__(self) -> None:
        self.response = service_pb2.GetSessionResponse(session=populated_session())

    def GetSession(self, request, context):  # noqa: N802
        return self.response


class AioBareSessionService(BareSessionService):
    async def GetSession(self, request, context):  # noqa: N802
        return self.response


async def serve_aio(args: argparse.Namespace) -> int:
    server = grpc.aio.server(options=server_options(
        DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_STREAMS_PER_CONNECTION, reuse_port=args.reuse_port
    ))
    service_pb2_grpc.add_SynchronizationSessionServiceServicer_to_server(AioBareSessionService(), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SESSION_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr)
        return 1
    await server.start()
    print(f"listening on 127.0.0.1:{port} (grpc.aio)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--max-workers", type=int, default=32, help="thread pool (default 32, as the service)")
    parser.add_argument("--aio", action="store_true", help="a grpc.aio server (no thread pool)")
    parser.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: share the port with others")
    args = parser.parse_args()
    if args.aio:
        return asyncio.run(serve_aio(args))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="grpc"),
        options=server_options(DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_STREAMS_PER_CONNECTION, args.reuse_port),
    )
    service_pb2_grpc.add_SynchronizationSessionServiceServicer_to_server(BareSessionService(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SESSION_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(3600):
        pass
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
