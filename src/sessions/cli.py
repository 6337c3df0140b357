"""`sessions ...`: the operator interface (documented in the README, Operating).

Exit codes: 0 success, 1 failure found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sessions import audit_cli, projections_cli, security_cli, version
from sessions.cli_common import UsageError, add_store, env
from sessions.domain.policy import Policy
from sessions.store.urls import StoreURLError, default_store_url
from sessions.transport import add_client_options

log = logging.getLogger("sessions")

POLICY_FLAGS = {
    "session_ttl": "seconds a session lives after its last heartbeat or progress (default 600)",
    "heartbeat_grace": "seconds without heartbeat or progress before a session is PENDING (default 120)",
    "sync_interval": "least seconds between the end of a session and the next open (default 60)",
    "full_sync_period": "seconds after which the next session is a FULL_SYNC again (default 86400)",
}


_env = env
_add_store = add_store


def _add_policy(parser: argparse.ArgumentParser) -> None:
    for name, text in POLICY_FLAGS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=_float_env(name),
            metavar="SECONDS",
            help=f"{text}; env SESSIONS_{name.upper()}",
        )


def _float_env(name: str) -> float | None:
    value = _env(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"SESSIONS_{name.upper()}={value!r} is not a number of seconds") from None


def _add_deadlines(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-deadlines",
        action="store_true",
        help="do not record stalls and expiries here (safe to run in several processes)",
    )
    parser.add_argument(
        "--deadline-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the deadline worker sweeps (default 1)",
    )


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        default=_env("metrics_listen"),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env SESSIONS_METRICS_LISTEN; "
        "default off)",
    )


@contextmanager
def _metrics_usage() -> Iterator[None]:
    """A --metrics-listen that is not HOST:PORT, or cannot be bound: exit 2."""
    from sessions.metrics import MetricsConfigError

    try:
        yield
    except MetricsConfigError as e:
        raise UsageError(str(e)) from None


def _serve_metrics(listen: str | None) -> Any:
    """Metrics served on ``listen`` (None: off)."""
    if not listen:
        return None
    from sessions.metrics import Metrics

    metrics = Metrics()
    with _metrics_usage():
        metrics.listen(listen)
    return metrics


def _policy(args: argparse.Namespace) -> Policy:
    try:
        return Policy.from_seconds(**{name: getattr(args, name) for name in POLICY_FLAGS})
    except ValueError as e:
        raise UsageError(f"invalid policy: {e}") from None


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(3600):
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    from sessions.security_cli import reload_on_sighup, server_kwargs, usage_errors
    from sessions.server import SessionsServer

    with usage_errors(), _metrics_usage():
        server = SessionsServer(
            args.store or default_store_url(),
            args.listen,
            policy=_policy(args),
            run_projector=not args.no_projector,
            run_deadlines=not args.no_deadlines,
            deadline_interval=args.deadline_interval,
            rebuild_on_start=args.rebuild_on_start,
            http_listen=args.http_listen,
            metrics_listen=args.metrics_listen,
            **server_kwargs(args),
        )
    reload_on_sighup(server)
    with _metrics_usage():
        server.start()
    _wait_for_signal()
    server.stop(grace=args.grace)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from sessions.cli_common import open_app, progress_bar
    from sessions.deadlines import DeadlineWorker
    from sessions.projection.read_model import ReadModel
    from sessions.projection.write_through import WriteThrough

    metrics = _serve_metrics(args.metrics_listen)  # before the store is opened
    app = open_app(args, policy=_policy(args), with_events=WriteThrough)
    log.info("store: %s", app.settings.description)
    read_model = ReadModel(app)
    if metrics is not None:
        metrics.observe(app, read_model.registry)
    projector = read_model.projector
    assert projector is not None
    projector.batch_size = args.batch_size
    head = app.recorder.max_notification_id() or 0
    with progress_bar(f"catching up {projector.table.table}", head) as update:
        update(projector.position)
        projector.on_batch = lambda n, position: update(position)
        projector.catch_up()
    projector.on_batch = None
    log.info("projector: caught up at %d; tailing the log", projector.position)
    if args.once:
        if metrics is not None:
            metrics.close()
        app.close()
        return 0
    read_model.start()
    deadlines = None
    if not args.no_deadlines:
        deadlines = DeadlineWorker(
            app, read_model, interval=args.deadline_interval, on_sweep=lambda sweep: projector.wake()
        )
        deadlines.start()
        log.info("deadlines: sweeping every %gs", args.deadline_interval)
    _wait_for_signal()
    if deadlines is not None:
        deadlines.stop()
    read_model.stop()
    if metrics is not None:
        metrics.close()
    app.close()
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sessions.security_cli import usage_errors
    from sessions.transport import call_metadata, client_channel

    with usage_errors():
        channel = client_channel(args, args.target)
    with channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs declare no methods
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout,
                metadata=call_metadata(args),
            )
        except grpc.RpcError as e:
            print(f"{args.target}: {e.code().name} {e.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--log-level", default=_env("log_level", "INFO"), help="default INFO")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC API (with projector by default)")
    serve.add_argument(
        "--listen",
        default=_env("listen", "127.0.0.1:50051"),
        metavar="HOST:PORT",
        help="address to listen on (env SESSIONS_LISTEN; default 127.0.0.1:50051)",
    )
    serve.add_argument(
        "--http-listen",
        default=_env("http_listen"),
        metavar="HOST:PORT",
        help="also serve the REST face (HTTP/JSON) there (env SESSIONS_HTTP_LISTEN; default off)",
    )
    _add_store(serve)
    _add_policy(serve)
    serve.add_argument(
        "--no-projector",
        action="store_true",
        help="do not fold events here: another process runs `sessions project`",
    )
    _add_deadlines(serve)
    serve.add_argument(
        "--rebuild-on-start",
        action="store_true",
        help="if the stored read model is an older version, rebuild it while it serves",
    )
    serve.add_argument("--grace", type=float, default=10.0, help="shutdown grace in seconds")
    _add_metrics(serve)
    security_cli.add_serve_options(serve)
    serve.set_defaults(run=cmd_serve)

    project = commands.add_parser("project", help="run the projector alone")
    _add_store(project)
    _add_policy(project)
    _add_deadlines(project)
    project.add_argument("--once", action="store_true", help="catch up, then exit")
    project.add_argument("--batch-size", type=int, default=500, help="events per transaction")
    _add_metrics(project)
    project.set_defaults(run=cmd_project)

    audit_cli.add_commands(commands)

    check = commands.add_parser("health", help="exit 0 when the server reports SERVING")
    check.add_argument("--target", default=_env("target", "127.0.0.1:50051"), metavar="HOST:PORT")
    check.add_argument("--service", default="", help="service name (default: the server)")
    check.add_argument("--timeout", type=float, default=3.0)
    add_client_options(check)
    check.set_defaults(run=cmd_health)

    projections_cli.add_commands(commands)
    security_cli.add_auth_commands(commands)
    return parser


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        level = args.log_level.upper()
        if level not in LOG_LEVELS:
            raise UsageError(f"--log-level: unknown level {args.log_level!r}; one of {', '.join(LOG_LEVELS)}")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (UsageError, StoreURLError) as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was interrupted can be run again
        print("sessions: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sessions history ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
