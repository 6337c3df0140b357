"""What every `sessions` subcommand shares: usage errors, flags whose default
comes from a SESSIONS_* variable, opening the store, progress bars, tables."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from sessions.store.urls import default_store_url


class UsageError(Exception):
    """Bad usage: the command exits with code 2."""


class StoreUnreachable(Exception):
    """The store cannot be reached or refuses the connection (a server that is
    down, a certificate that does not verify): the command exits with code 3."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn a failure to reach the store into StoreUnreachable, in one line."""
    import sqlite3

    import psycopg

    from sessions.store.health import OUTAGE_ERRORS

    try:
        yield
    except (*OUTAGE_ERRORS, psycopg.OperationalError, sqlite3.OperationalError) as e:
        raise StoreUnreachable(" ".join(str(e).split()) or type(e).__name__) from None


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def env_name(flag: str) -> str:
    """The variable of a flag: --deadline-interval -> SESSIONS_DEADLINE_INTERVAL."""
    return "SESSIONS_" + flag.lstrip("-").replace("-", "_").upper()


def env(name: str, default: str | None = None) -> str | None:
    """SESSIONS_<NAME>, or ``default`` when unset or empty."""
    return os.environ.get(f"SESSIONS_{name.upper()}") or default


class FromEnv(str):
    """A flag's default read from its variable: converted (and refused) only
    when the command that has the flag runs, and refusals name the variable."""

    variable: str

    def __new__(cls, value: str, variable: str) -> FromEnv:
        made = super().__new__(cls, value)
        made.variable = variable
        return made


Converter = Callable[[str], Any]


def checked(convert: Converter) -> Converter:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, argparse.ArgumentTypeError) as e:
            if isinstance(text, FromEnv):  # not argparse's: its message would name the flag
                raise UsageError(f"{text.variable}={str(text)!r}: {e}") from None
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("not a number of seconds (0 or more)")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise ValueError("must be more than 0 seconds")
    return value


def whole(least: int) -> Converter:
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
        if value < least:
            raise ValueError(f"must be {least} or more")
        return value

    return number


def one_of(*choices: str) -> Converter:
    def choice(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return text.lower()

    return choice


TRUE = ("1", "true", "yes", "on", "y")
FALSE = ("0", "false", "no", "off", "n", "")


def switch_value(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError(f"not a yes or no ({'/'.join(TRUE[:4])} or {'/'.join(FALSE[:4])})")


class _Switch(argparse.Action):
    """store_true whose default may be a FromEnv string, converted like any other."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, True)


def option(
    parser: Any,
    flag: str,
    *,
    help: str,
    type: Converter | None = None,
    default: Any = None,
    variable: str | None = None,
    shown_default: str | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """A flag whose default comes from its SESSIONS_* variable (empty counts as
    unset), then ``default``. ``type`` None makes a switch (store_true; the
    variable takes 1/true/yes/on or 0/false/no/off). A bad value, given or
    from the variable, is one line and exit 2. The help names the variable and
    the default."""
    variable = variable or env_name(flag)
    raw = os.environ.get(variable)
    note = f"env {variable}"
    if type is None:
        kwargs.update(action=_Switch, type=checked(switch_value))
        default = False
    else:
        kwargs["type"] = checked(type)
        if shown_default or default is not None:
            note += f"; default {shown_default or default}"
    return parser.add_argument(
        flag,
        default=FromEnv(raw, variable) if raw else default,
        help=f"{help} ({note})",
        **kwargs,
    )


def add_store(parser: argparse.ArgumentParser, flag: str = "--store") -> None:
    option(
        parser,
        flag,
        dest="store",
        type=str,
        variable="SESSIONS_STORE",
        metavar="URL",
        shown_default=".sessions/sessions.db in the working directory",
        help="store URL: sqlite:///path/file.db, postgresql://user@host:port/db?sslmode=... "
        "or memory://",
    )


def open_app(args: argparse.Namespace, **kwargs: Any) -> Any:
    from sessions.store.application import SessionsApplication
    from sessions.store.urls import parse_store_url

    settings = parse_store_url(args.store or default_store_url())
    with store_errors():
        return SessionsApplication(settings, **kwargs)


def parse_time(text: str, flag: str = "--as-of") -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def have_rich() -> bool:
    """Whether the `cli` extra (rich) is installed: progress bars, and tables
    that wrap on a terminal. Without it the output is plain."""
    from importlib.util import find_spec

    try:
        return find_spec("rich") is not None
    except ValueError:  # (a module set to None in sys.modules)
        return False


@contextmanager
def progress_bar(description: str, total: int, unit: str = "events") -> Iterator[Any]:
    """A progress bar with rate and time left; yields update(completed).
    Without rich, no bar (the command's result says what was done)."""
    if not have_rich():
        yield lambda completed: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class Rate(TransferSpeedColumn):
        def render(self, task):
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
    """A table on standard output, never cut: on a terminal (with rich),
    cells wrap to its width; anywhere else (a file, a pipe), one
    tab-separated line per row under a header, every cell whole."""
    if sys.stdout.isatty() and have_rich():
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
