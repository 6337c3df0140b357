"""What every `sessions` subcommand shares: usage errors, settings from
flags or SESSIONS_* variables, opening the store, progress bars."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sessions.store.urls import default_store_url


class UsageError(Exception):
    """Bad usage: the command exits with code 2."""


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SESSIONS_{name.upper()}", default)


def add_store(parser: argparse.ArgumentParser, flag: str = "--store") -> None:
    parser.add_argument(
        flag,
        dest="store",
        default=env("store"),
        help="store URL: sqlite:///path/file.db, postgresql://user@host:port/db or memory:// "
        "(env SESSIONS_STORE; default: .sessions/sessions.db in the working directory)",
    )


def open_app(args: argparse.Namespace, **kwargs: Any) -> Any:
    from sessions.store.application import SessionsApplication
    from sessions.store.urls import parse_store_url

    return SessionsApplication(parse_store_url(args.store or default_store_url()), **kwargs)


def parse_time(text: str, flag: str = "--as-of") -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "events") -> Iterator[Any]:
    """A progress bar with rate and time left; yields update(completed)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class Rate(TransferSpeedColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            speed = task.finished_speed or task.speed
            return f"{speed or 0:,.0f} {unit}/s"

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed: progress.update(task, completed=completed)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table on standard output, never cut: on a terminal, cells wrap to
    its width; anywhere else (a file, a pipe), one tab-separated line per
    row under a header, every cell whole."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    print(f"# {title}")
    print("\t".join(columns))
    for row in rows:
        print("\t".join(" ".join(cell.split()) if cell else "" for cell in row))
