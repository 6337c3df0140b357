"""The read-model side of the `sessions` command: `sessions projections
status|rebuild|verify|retry-parked` and `sessions events export|import` (see
README, "Operating projections")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sessions.cli.common import UsageError, add_store, open_app, print_table, progress_bar

NAMES = ("session_snapshots",)


def add_commands(commands: argparse._SubParsersAction) -> None:
    projections = commands.add_parser("projections", help="read models: status, rebuild, verify")
    sub = projections.add_subparsers(dest="projections_command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="version, position, lag, state, parked events, owner and standbys")
    status.add_argument("--json", action="store_true", help="one JSON object per read model")
    add_store(status)
    status.set_defaults(run=cmd_status)

    rebuild = sub.add_parser("rebuild", help="build the read model afresh and switch to it")
    rebuild.add_argument("name", nargs="?", default=NAMES[0], choices=NAMES)
    rebuild.add_argument("--keep-old", action="store_true", help="do not drop the replaced tables")
    rebuild.add_argument(
        "--from-archive", metavar="FILE", type=Path, help="fold an exported archive, not the store's log"
    )
    rebuild.add_argument(
        "--batch-size", type=int, help="events per transaction (default: the rebuild's, 20000)"
    )
    rebuild.add_argument(
        "--drop-wait", type=float, default=30.0, metavar="SECONDS",
        help="accepted for compatibility and ignored: nothing reads the old tables once "
        "the new one is live, so they are dropped at once (unless --keep-old)",
    )
    add_store(rebuild)
    rebuild.set_defaults(run=cmd_rebuild)

    verify = sub.add_parser("verify", help="compare the read model with a fresh fold; exit 1 on any difference")
    verify.add_argument("--sample", type=int, metavar="N", help="check N random sessions, not all")
    verify.add_argument("--seed", type=int, help="seed of the sample, to repeat it")
    add_store(verify)
    verify.set_defaults(run=cmd_verify)

    retry = sub.add_parser("retry-parked", help="apply the parked events again")
    add_store(retry)
    retry.set_defaults(run=cmd_retry_parked)

    events = commands.add_parser("events", help="the event log: export and import archives")
    events_sub = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    export = events_sub.add_parser("export", help="write the whole log to a compressed archive")
    export.add_argument("--out", required=True, type=Path, metavar="FILE")
    add_store(export)
    export.set_defaults(run=cmd_export)
    load = events_sub.add_parser("import", help="load an archive into an empty store")
    load.add_argument("archive", type=Path, metavar="FILE")
    add_store(load)
    load.set_defaults(run=cmd_import)


def cmd_status(args: argparse.Namespace) -> int:
    from sessions.projection.status import read_model_status

    app = open_app(args)
    try:
        status = read_model_status(app)
    finally:
        app.close()
    if args.json:
        print(status.as_json())
        return 0
    builds = [("live", status.live)] + ([("rebuilding", status.building)] if status.building else [])
    print_table(
        f"read model {status.name} (this build folds version {status.code_version})",
        ("build", "table", "version", "position", "head", "lag (events)", "lag (s)", "parked"),
        (
            (
                label, build.table, str(build.version), str(build.position), str(status.head),
                str(build.lag_events),
                "?" if build.lag_seconds is None else f"{build.lag_seconds:.1f}",
                str(build.parked),
            )
            for label, build in builds
        ),
    )
    print(f"state: {status.state}")
    if status.projectors is not None:
        owner = next((p for p in status.projectors if p.role == "owner"), None)
        print(
            f"owner: {owner.host} pid {owner.pid} since {owner.owner_since}"
            if owner
            else "owner: none (no projector holds the read model: it falls behind)"
        )
        for standby in (p for p in status.projectors if p.role == "standby"):
            print(f"standby: {standby.host} pid {standby.pid} connected {standby.connected_at}")
    if status.advice:
        print(f"advice: {status.advice}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from sessions.audit.archive import ArchiveError, read_events, read_header
    from sessions.projection.rebuild import rebuild

    app = open_app(args)
    try:
        feed = None
        head = app.recorder.max_notification_id() or 0
        if args.from_archive:
            try:
                head = read_header(args.from_archive).head
            except (OSError, ArchiveError) as e:
                raise UsageError(f"cannot read {args.from_archive}: {e}") from None
            feed = _ArchiveFeed(read_events(args.from_archive))
        with progress_bar("rebuilding", head) as update:
            result = rebuild(
                app,
                feed=feed,
                keep_old=args.keep_old,
                **({"batch_size": args.batch_size} if args.batch_size else {}),
                on_progress=update,
            )
    finally:
        app.close()
    rate = result.events / result.seconds if result.seconds else 0.0
    print(
        f"{result.table} (version {result.version}) is live: folded {result.events} events "
        f"in {result.seconds:.1f}s ({rate:,.0f} events/s)"
        + (f", resumed from position {result.resumed_from}" if result.resumed_from else "")
    )
    for table in result.dropped:
        print(f"dropped {table}")
    for table in result.kept:
        print(f"kept {table}")
    return 0


class _ArchiveFeed:
    """Hands out an archive's events in batches, skipping what a resumed
    build already holds."""

    def __init__(self, events):
        self.events = iter(events)

    def __call__(self, after: int, limit: int):
        batch = []
        for notification in self.events:
            if notification.id <= after:
                continue
            batch.append(notification)
            if len(batch) == limit:
                break
        return batch, (batch[-1].id if batch else after)


def cmd_verify(args: argparse.Namespace) -> int:
    from sessions.projection.row_tables import open_rows
    from sessions.projection.verify import differences

    app = open_app(args)
    try:
        view = open_rows(app)
        found = list(differences(app, view, sample=args.sample, seed=args.seed))
    finally:
        app.close()
    for difference in found:
        print(f"DIFFERS {difference.session_id}: {difference.problem}")
    if not found:
        what = f"{args.sample} sampled sessions" if args.sample else "every session"
        print(f"identical: {what} match a fresh fold of their events")
    return 1 if found else 0


def cmd_retry_parked(args: argparse.Namespace) -> int:
    from sessions.projection.parked import retry_parked
    from sessions.projection.row_tables import open_rows

    app = open_app(args)
    try:
        result = retry_parked(app, open_rows(app))
    finally:
        app.close()
    print(f"applied {result.applied} parked events; {result.still_parked} still parked")
    return 1 if result.still_parked else 0


def cmd_export(args: argparse.Namespace) -> int:
    from sessions.audit.archive import export_events

    app = open_app(args)
    try:
        head = app.recorder.max_notification_id() or 0
        with progress_bar("exporting", head) as update:
            count = export_events(app, args.out, on_progress=update)
    finally:
        app.close()
    print(f"exported {count} events to {args.out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from sessions.audit.archive import ArchiveError, import_events, read_header

    app = open_app(args)
    try:
        try:
            head = read_header(args.archive).head
            with progress_bar("importing", head) as update:
                count = import_events(app, args.archive, on_progress=update)
        except (OSError, ArchiveError) as e:
            print(f"sessions: {e}", file=sys.stderr)
            return 1
    finally:
        app.close()
    print(f"imported {count} events into {app.settings.description}")
    return 0
