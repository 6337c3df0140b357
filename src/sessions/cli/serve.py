"""`sessions serve`, `sessions project` and `sessions health`: running the
service and asking it how it is (see README, Operating)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sessions import logs
from sessions.cli.common import (
    UsageError,
    add_store,
    option,
    positive_seconds,
    seconds,
    store_errors,
    whole,
)
from sessions.cli.security import add_serve_options, reload_on_sighup, server_kwargs, usage_errors
from sessions.domain.policy import Policy
from sessions.store.urls import default_store_url, redact_url
from sessions.transport import DEFAULT_READ_THREADS, DEFAULT_THREADS, add_client_options

log = logging.getLogger("sessions")

POLICY_FLAGS = {  # name: (help, the default Policy's value shown in --help)
    "session_ttl": ("seconds a session lives after its last heartbeat or progress", "600"),
    "heartbeat_grace": ("seconds without heartbeat or progress before a session is PENDING", "120"),
    "sync_interval": ("least seconds between the end of a session and the next open", "60"),
    "full_sync_period": ("seconds after which the next session is a FULL_SYNC again", "86400"),
}



def _add_policy(parser: argparse.ArgumentParser) -> None:
    for name, (text, shown) in POLICY_FLAGS.items():
        option(parser, f"--{name.replace('_', '-')}", type=seconds, metavar="SECONDS", help=text,
               shown_default=shown)


def _add_deadlines(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--no-deadlines",
        help="do not record stalls and expiries here (safe to run in several processes)",
    )
    option(
        parser,
        "--deadline-interval",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often the deadline worker sweeps",
    )


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--metrics-listen",
        type=str,
        metavar="HOST:PORT",
        shown_default="off",
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
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


def _log_settings(args: argparse.Namespace) -> None:
    """Every setting this process runs with, whether from a flag, a variable
    or a default (the store with its password hidden)."""
    settings = {key: value for key, value in vars(args).items() if key not in ("run", "command", "argv")}
    settings["store"] = redact_url(args.store or default_store_url())
    logs.log_settings(log, settings)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(3600):
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    from sessions.server import SessionsServer

    worker = args.worker_index
    if worker is None and args.workers > 1:
        return _serve_workers(args)
    first = not worker  # the only process, or worker 0 of --workers N (cli.workers)
    with usage_errors(), _metrics_usage():
        server = SessionsServer(
            args.store or default_store_url(),
            args.listen,
            policy=_policy(args),
            run_projector=first and not args.no_projector,
            run_deadlines=first and not args.no_deadlines,
            deadline_interval=args.deadline_interval,
            rebuild_on_start=first and args.rebuild_on_start,
            max_workers=args.threads,
            read_threads=args.read_threads,
            http_listen=args.http_listen if first else None,
            metrics_listen=args.metrics_listen,
            metrics_shared=worker is not None,  # (the parent serves the group's: cli.workers)
            reuse_port=worker is not None,
            **server_kwargs(args),
        )
    reload_on_sighup(server)
    with store_errors(), _metrics_usage():
        server.start()
    _log_settings(args)  # (once they proved usable: a refusal is its one line)
    _wait_for_signal()
    server.stop(grace=args.grace)
    return 0


def _serve_workers(args: argparse.Namespace) -> int:
    from sessions.cli.workers import Workers

    if args.listen.rsplit(":", 1)[-1] == "0":
        raise UsageError("--workers N needs a fixed port in --listen (the workers share it)")
    if (args.store or "").startswith("memory://"):
        # Each worker would hold a database of its own: a session opened
        # through one would be NOT_FOUND through the others.
        raise UsageError("--workers N needs a store the workers share (an sqlite file or postgresql), not memory://")
    workers = Workers(args.argv, args.workers, args.grace)
    if args.metrics_listen:
        workers.metrics = _group_metrics(args, workers)
    _log_settings(args)
    return workers.run()


def _group_metrics(args: argparse.Namespace, workers: Any) -> Any:
    """The group's metrics, served by the parent at --metrics-listen (bound
    before any worker starts: a busy port is exit 2)."""
    from sessions.metrics import GroupMetrics

    store_url = args.store or default_store_url()

    def open_store() -> tuple[Any, Any]:
        from sessions.projection.registry import Registry
        from sessions.store.application import SessionsApplication
        from sessions.store.urls import parse_store_url

        app = SessionsApplication(parse_store_url(store_url))
        try:
            return app, Registry.of(app)
        except BaseException:
            app.close()
            raise

    projector_pid = None if args.no_projector else (lambda: workers.pid(0))
    metrics = GroupMetrics(open_store, projector_pid)
    try:
        with _metrics_usage():
            metrics.listen(args.metrics_listen)
    except BaseException:
        metrics.close()
        raise
    log.info("metrics: the group's, summed from the workers' files in %s", metrics.directory)
    return metrics


def cmd_project(args: argparse.Namespace) -> int:
    from sessions.cli.common import open_app, progress_bar
    from sessions.deadlines import DeadlineWorker
    from sessions.projection.read_model import ReadModel
    from sessions.projection.write_through import WriteThrough

    metrics = _serve_metrics(args.metrics_listen)  # before the store is opened
    _log_settings(args)
    app = open_app(args, policy=_policy(args), with_events=WriteThrough)
    log.info("store: %s", app.settings.description)
    read_model = ReadModel(app)
    if metrics is not None:
        metrics.observe(app, read_model.registry)
    projector = read_model.projector
    assert projector is not None
    if metrics is not None:
        metrics.observe_projector(projector)
    projector.batch_size = args.batch_size
    head = app.recorder.max_notification_id() or 0
    if projector.take_ownership():
        with progress_bar(f"catching up {projector.table.table}", head) as update:
            update(projector.position)
            projector.on_batch = lambda n, position: update(position)
            projector.catch_up()
        projector.on_batch = None
        log.info("projector: caught up at %d; tailing the log", projector.position)
    else:  # (projection.ownership)
        log.info("projector: another process owns the read model; this one stands by to take over")
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


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gRPC API (with projector by default)")
    option(
        serve,
        "--listen",
        type=str,
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="address to listen on",
    )
    option(
        serve,
        "--http-listen",
        type=str,
        metavar="HOST:PORT",
        shown_default="off",
        help="also serve the REST face (HTTP/JSON) there",
    )
    add_store(serve)
    _add_policy(serve)
    option(
        serve,
        "--no-projector",
        help="do not fold events here: another process runs `sessions project`",
    )
    _add_deadlines(serve)
    option(
        serve,
        "--rebuild-on-start",
        help="if the stored read model is an older version, rebuild it while it serves",
    )
    option(serve, "--grace", type=seconds, default=10.0, metavar="SECONDS",
           help="on SIGTERM or SIGINT, how long in-flight calls may take to finish")
    # --threads, not --workers: "workers" is kept for server processes
    # (several processes on one port), the usual meaning of the word.
    option(serve, "--threads", type=whole(1), default=DEFAULT_THREADS, metavar="N",
           help="threads serving calls (GetSession and ListSessions: see --read-threads)")
    option(serve, "--read-threads", type=whole(0), default=DEFAULT_READ_THREADS, metavar="N",
           help="threads serving GetSession and ListSessions, apart from --threads (0: on --threads)")
    option(serve, "--workers", type=whole(1), default=1, metavar="N",
           help="server processes sharing the listen address (SO_REUSEPORT); worker 0 runs the "
           "projector and the deadline worker")
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # (cli.workers)
    _add_metrics(serve)
    add_serve_options(serve)
    serve.set_defaults(run=cmd_serve)

    project = commands.add_parser("project", help="run the projector alone")
    add_store(project)
    _add_policy(project)
    _add_deadlines(project)
    project.add_argument(
        "--once", action="store_true", help="catch up, then exit (at once if another projector owns the read model)"
    )
    option(project, "--batch-size", type=whole(1), default=500, metavar="N",
           variable="SESSIONS_PROJECTOR_BATCH_SIZE", help="events per transaction")
    _add_metrics(project)
    project.set_defaults(run=cmd_project)


def add_health_command(commands: Any) -> None:
    check = commands.add_parser("health", help="exit 0 when the server reports SERVING")
    option(check, "--target", type=str, default="127.0.0.1:50051", metavar="HOST:PORT",
           help="the server to ask")
    check.add_argument("--service", default="", help="service name (default: the server; "
                       "'liveness': whether the process runs)")
    option(check, "--timeout", type=positive_seconds, default=3.0, metavar="SECONDS",
           variable="SESSIONS_HEALTH_TIMEOUT", help="how long to wait for the answer")
    add_client_options(check)
    check.set_defaults(run=cmd_health)
