"""`sessions ...`: the operator interface (documented in the README, Operating).

One module per command group: ``serve`` (serve, project, health), ``audit``
(history, audit), ``projections`` (projections, events), ``security`` (auth,
and the security options of serve); ``common`` holds what they share.

Exit codes: 0 success, 1 failure found, 2 bad usage, 3 the store cannot be
reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sessions import logs, version
from sessions.cli import audit, projections, security, serve
from sessions.cli.common import FromEnv, Parser, StoreUnreachable, UsageError, checked, one_of, option
from sessions.store.urls import StoreURLError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_log_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_commands(commands)
    audit.add_commands(commands)
    serve.add_health_command(commands)
    projections.add_commands(commands)
    security.add_auth_commands(commands)
    for name in ("serve", "project"):  # also after the command: `sessions serve --log-format json`
        _add_log_options(commands.choices[name], after_command=True)
    return parser


def _add_log_options(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The logging options, on the main parser; with ``after_command``, on a
    command's parser too, where they only count when given (and are left out
    of its --help)."""
    shown: dict[str, Any] = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS} if after_command else {}

    def add(flag: str, **kwargs: Any) -> None:
        if after_command:
            parser.add_argument(flag, type=checked(kwargs["type"]), metavar=kwargs.get("metavar"), **shown)
        else:
            option(parser, flag, **kwargs)

    add("--log-level", type=_as_given, default="INFO", metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)}")
    add("--log-format", type=one_of(*logs.FORMATS), default="text",
        help="text lines, or JSON lines (time, level, logger, message and fields)")
    add("--access-log", type=one_of(*logs.ACCESS_MODES), default="on",
        help="one line per call (logger sessions.access, at INFO): on, only calls that "
        "did not end OK (errors), or off")


def _as_given(text: str) -> str:
    return text  # checked by _log_level, which names the variable when it came from one


def _log_level(given: str) -> str:
    level = given.upper()
    if level not in LOG_LEVELS:
        where = given.variable if isinstance(given, FromEnv) else "--log-level"
        raise UsageError(f"{where}: unknown level {str(given)!r}; one of {', '.join(LOG_LEVELS)}")
    return level


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # (serve --workers starts it again)
        if getattr(args, "worker_index", None) is not None:
            logs.set_worker(args.worker_index, os.getpid())
        level = _log_level(args.log_level)
        logs.configure(level, args.log_format, args.access_log)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (UsageError, StoreURLError) as e:
        print(f"sessions: {e}", file=sys.stderr)
        return 2
    except StoreUnreachable as e:
        print(f"sessions: store unreachable: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C: what was interrupted can be run again
        print("sessions: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sessions history ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
