"""The auditing side of the `sessions` command: `sessions history` and
`sessions audit verify|anchor` (see README, "Auditing")."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from typing import Any

from sessions.cli.common import (
    UsageError,
    add_store,
    open_app,
    parse_time,
    print_table,
    progress_bar,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    history = commands.add_parser("history", help="a session's events in order, and the state after each")
    history.add_argument("session_id", metavar="SESSION_ID")
    add_store(history)
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
    add_store(verify)
    verify.set_defaults(run=cmd_audit_verify)
    anchor = audit_commands.add_parser(
        "anchor", help="write every stream's head (version, link) to keep outside the store"
    )
    anchor.add_argument("--out", metavar="FILE", help="default: standard output")
    add_store(anchor)
    anchor.set_defaults(run=cmd_audit_anchor)


def cmd_history(args: argparse.Namespace) -> int:
    from sessions.domain.errors import NotFound

    if args.at_version is not None and args.at_version < 1:
        raise UsageError("--at-version must be 1 or more")
    app = open_app(args)
    try:
        if args.as_of is not None or args.at_version is not None:
            _print_state_then(app, args)
        else:
            _print_history(app, args)
        return 0
    except NotFound as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 1
    finally:
        app.close()


def _print_state_then(app: Any, args: argparse.Namespace) -> None:
    """The session as it was at --at-version or --as-of, as JSON."""
    import json

    from google.protobuf.json_format import MessageToDict

    from sessions.api.convert import session_message
    from sessions.audit.history import session_as_of, session_at_version

    if args.at_version is not None:
        session = session_at_version(app, args.session_id, args.at_version)
        message = session_message(session)
    else:
        session, message = session_as_of(app, args.session_id, parse_time(args.as_of))
    shown = MessageToDict(message, preserving_proto_field_name=True)
    print(json.dumps({"version": session.version, "session": shown}, indent=None if args.json else 2))


def _print_history(app: Any, args: argparse.Namespace) -> None:
    """Every event of the session: JSON lines with --json, else a table."""
    import json

    from google.protobuf.json_format import MessageToDict

    from sessions.audit.history import session_history

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
        return
    print_table(
        f"session {args.session_id}",
        ("ver", "pos", "recorded at", "event", "principal", "idempotency key", "changes", "status after"),
        (
            (
                str(e.version),
                str(e.position),
                e.recorded_at.isoformat(timespec="milliseconds"),
                e.event_type,
                e.principal,
                e.idempotency_key,
                _describe_changes(e.changes),
                _status_name(e.state.status),
            )
            for e in entries
        ),
    )


def _describe_changes(changes: dict) -> str:
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
    from sessions.audit.chain_check import check_all, check_session

    if bool(args.session_id) == bool(args.all):
        raise UsageError("give a SESSION_ID or --all")
    if args.anchor and not args.all:
        raise UsageError("--anchor goes with --all")
    anchor = _read_anchor(args.anchor) if args.anchor else None
    app = open_app(args)
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
            with progress_bar("verifying chains", head) as update:
                breaks = list(check_all(app, on_progress=update, anchor=anchor))
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
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        if document.get("format") != ANCHOR_FORMAT:
            raise ValueError("not a sessions anchor file")
        return {stream: (int(v), str(link)) for stream, (v, link) in document["streams"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read the anchor {path}: {e}") from None


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime

    from sessions.audit.chain_check import heads

    app = open_app(args)
    try:
        head = app.recorder.max_notification_id() or 0
        with progress_bar("reading stream heads", head) as update:
            found = heads(app, on_progress=update)
    finally:
        app.close()
    document = {
        "format": ANCHOR_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
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
