"""`sessions ...`: the operator interface (see spec/DESIGN.md).

Exit codes: 0 success, 1 failure found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from sessions import security_cli
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


class UsageError(Exception):
    pass


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SESSIONS_{name.upper()}", default)


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=_env("store"),
        help="store URL: sqlite:///path/file.db, postgresql://user@host:port/db or memory:// "
        "(env SESSIONS_STORE; default: .sessions/sessions.db in the working directory)",
    )


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

    with usage_errors():
        server = SessionsServer(
            args.store or default_store_url(),
            args.listen,
            policy=_policy(args),
            run_projector=not args.no_projector,
            run_deadlines=not args.no_deadlines,
            deadline_interval=args.deadline_interval,
            **server_kwargs(args),
        )
    reload_on_sighup(server)
    server.start()
    _wait_for_signal()
    server.stop(grace=args.grace)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    from sessions.deadlines import DeadlineWorker
    from sessions.projection.runner import Projector
    from sessions.projection.snapshots import open_snapshots
    from sessions.store.application import SessionsApplication
    from sessions.store.urls import parse_store_url

    settings = parse_store_url(args.store or default_store_url())
    log.info("store: %s", settings.description)
    app = SessionsApplication(settings, policy=_policy(args))
    view = open_snapshots(app)
    head = app.recorder.max_notification_id() or 0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "events",
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task("catching up", total=head, completed=view.position())
        projector = Projector(
            app,
            view,
            batch_size=args.batch_size,
            on_batch=lambda n, position: progress.update(task, completed=position),
        )
        projector.catch_up()
    projector.on_batch = None
    log.info("projector: caught up at %d; tailing the log", projector.position)
    if args.once:
        app.close()
        return 0
    projector.start()
    deadlines = None
    if not args.no_deadlines:
        deadlines = DeadlineWorker(
            app, view, interval=args.deadline_interval, on_sweep=lambda sweep: projector.wake()
        )
        deadlines.start()
        log.info("deadlines: sweeping every %gs", args.deadline_interval)
    _wait_for_signal()
    if deadlines is not None:
        deadlines.stop()
    projector.stop()
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
            response = health_pb2_grpc.HealthStub(channel).Check(
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


def _open_app(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from sessions.store.application import SessionsApplication
    from sessions.store.urls import parse_store_url

    return SessionsApplication(parse_store_url(args.store or default_store_url()))


def _parse_time(text: str):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from google.protobuf.json_format import MessageToDict
    from rich.console import Console
    from rich.table import Table

    from sessions.api.convert import session_message
    from sessions.domain.errors import NotFound
    from sessions.projection.history import (
        session_as_of,
        session_at_version,
        session_history,
    )

    app = _open_app(args)
    try:
        if args.at_version is not None and args.at_version < 1:
            raise UsageError("--at-version must be 1 or more")
        if args.as_of is not None or args.at_version is not None:
            if args.at_version is not None:
                session = session_at_version(app, args.session_id, args.at_version)
                message = session_message(session)
            else:
                session, message = session_as_of(app, args.session_id, _parse_time(args.as_of))
            shown = MessageToDict(message, preserving_proto_field_name=True)
            print(json.dumps({"version": session.version, "session": shown}, indent=None if args.json else 2))
            return 0
        entries = session_history(app, args.session_id)
        if args.json:
            for e in entries:
                print(json.dumps({
                    "version": e.version,
                    "position": e.position,
                    "recorded_at": e.recorded_at.isoformat(),
                    "event_type": e.event_type,
                    "principal": e.principal,
                    "idempotency_key": e.idempotency_key,
                    "link": e.link,
                    "changes": e.changes,
                    "state": MessageToDict(e.state, preserving_proto_field_name=True),
                }))
            return 0
        table = Table(title=f"session {args.session_id}")
        for column in ("ver", "pos", "recorded at", "event", "principal", "idempotency key", "changes", "status after"):
            table.add_column(column)
        for e in entries:
            table.add_row(
                str(e.version),
                str(e.position),
                e.recorded_at.isoformat(timespec="milliseconds"),
                e.event_type,
                e.principal,
                e.idempotency_key,
                _describe_changes(e.changes),
                _status_name(e.state.status),
            )
        Console().print(table)
        return 0
    except NotFound as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 1
    finally:
        app.close()


def _describe_changes(changes: dict) -> str:  # type: ignore[type-arg]
    parts = []
    for key, value in changes.items():
        if key == "entries":
            value = "; ".join(
                f"{e['object_type']} " + ", ".join(f"{c}+{s}/{f}" for c, s, f in e["changes"])
                for e in value
            )
        parts.append(f"{key}={value}")
    return "\n".join(parts)


def _status_name(number: int) -> str:
    from sessions.api.protos import session_pb2

    return session_pb2.SessionStatus.Name(number)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from sessions.store.chain_check import check_all, check_session

    if bool(args.session_id) == bool(args.all):
        raise UsageError("give a SESSION_ID or --all")
    if args.anchor and not args.all:
        raise UsageError("--anchor goes with --all")
    anchor = _read_anchor(args.anchor) if args.anchor else None
    app = _open_app(args)
    try:
        if args.session_id:
            try:
                broken = check_session(app, args.session_id)
            except LookupError as e:
                print(f"sessions: {e}", file=sys.stderr)
                return 1
            breaks = [broken] if broken else []
        else:
            head = app.recorder.max_notification_id() or 0
            with Progress(transient=True) as progress:
                task = progress.add_task("verifying chains", total=head)
                breaks = list(
                    check_all(
                        app,
                        on_progress=lambda p: progress.update(task, completed=p),
                        anchor=anchor,
                    )
                )
        for b in breaks:
            print(f"BROKEN {b.stream}: first bad version {b.version}: {b.problem}")
        if not breaks:
            print("intact: every chain verifies")
        return 1 if breaks else 0
    finally:
        app.close()


ANCHOR_FORMAT = "sessions.anchor"


def _read_anchor(path: str) -> dict[str, tuple[int, str]]:
    import json

    try:
        document = json.loads(open(path, encoding="utf-8").read())
        if document.get("format") != ANCHOR_FORMAT:
            raise ValueError("not a sessions anchor file")
        return {stream: (int(v), str(link)) for stream, (v, link) in document["streams"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read the anchor {path}: {e}") from None


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from rich.progress import Progress

    from sessions.store.chain_check import heads

    app = _open_app(args)
    try:
        head = app.recorder.max_notification_id() or 0
        with Progress(transient=True) as progress:
            task = progress.add_task("reading stream heads", total=head)
            found = heads(app, on_progress=lambda p: progress.update(task, completed=p))
    finally:
        app.close()
    document = {
        "format": ANCHOR_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "head": head,
        "streams": {stream: [version, link] for stream, (version, link) in sorted(found.items())},
    }
    text = json.dumps(document, indent=1) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"anchored {len(found)} streams at position {head} in {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=_env("log_level", "INFO"), help="default INFO")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC API (with projector by default)")
    serve.add_argument(
        "--listen",
        default=_env("listen", "127.0.0.1:50051"),
        metavar="HOST:PORT",
        help="address to listen on (env SESSIONS_LISTEN; default 127.0.0.1:50051)",
    )
    _add_store(serve)
    _add_policy(serve)
    serve.add_argument(
        "--no-projector",
        action="store_true",
        help="do not fold events here: another process runs `sessions project`",
    )
    _add_deadlines(serve)
    serve.add_argument("--grace", type=float, default=10.0, help="shutdown grace in seconds")
    security_cli.add_serve_options(serve)
    serve.set_defaults(run=cmd_serve)

    project = commands.add_parser("project", help="run the projector alone")
    _add_store(project)
    _add_policy(project)
    _add_deadlines(project)
    project.add_argument("--once", action="store_true", help="catch up, then exit")
    project.add_argument("--batch-size", type=int, default=500, help="events per transaction")
    project.set_defaults(run=cmd_project)

    history = commands.add_parser("history", help="a session's events in order, and the state after each")
    history.add_argument("session_id", metavar="SESSION_ID")
    _add_store(history)
    history.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    point = history.add_mutually_exclusive_group()
    point.add_argument("--as-of", metavar="TIME", help="the session as GetSession showed it then (RFC 3339)")
    point.add_argument("--at-version", type=int, metavar="N", help="the session right after version N")
    history.set_defaults(run=cmd_history)

    audit = commands.add_parser("audit", help="tamper evidence")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_commands.add_parser("verify", help="recompute the chains; exit 1 if any is broken")
    verify.add_argument("session_id", nargs="?", metavar="SESSION_ID")
    verify.add_argument("--all", action="store_true", help="every stream in the store")
    verify.add_argument(
        "--anchor", metavar="FILE", help="also check every stream still reaches its anchored head"
    )
    _add_store(verify)
    verify.set_defaults(run=cmd_audit_verify)
    anchor = audit_commands.add_parser(
        "anchor", help="write every stream's head (version, link) to keep outside the store"
    )
    anchor.add_argument("--out", metavar="FILE", help="default: standard output")
    _add_store(anchor)
    anchor.set_defaults(run=cmd_audit_anchor)

    check = commands.add_parser("health", help="exit 0 when the server reports SERVING")
    check.add_argument("--target", default=_env("target", "127.0.0.1:50051"), metavar="HOST:PORT")
    check.add_argument("--service", default="", help="service name (default: the server)")
    check.add_argument("--timeout", type=float, default=3.0)
    add_client_options(check)
    check.set_defaults(run=cmd_health)

    security_cli.add_auth_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (UsageError, StoreURLError) as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sessions history ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
