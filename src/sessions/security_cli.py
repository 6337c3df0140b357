"""The security side of the `sessions` command: `sessions auth ...`, and the
access, TLS and limit options of `sessions serve` (see README, "Security")."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sessions import credentials
from sessions.transport import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    SecurityConfigError,
)

log = logging.getLogger("sessions")


def _env(name: str) -> str | None:
    return os.environ.get(f"SESSIONS_{name}") or None


def _usage_error(message: str) -> Exception:
    from sessions.cli import UsageError  # at call time: cli is loaded by then

    return UsageError(message)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Unsafe or unreadable security settings are bad usage (exit 2)."""
    try:
        yield
    except (credentials.CredentialsError, SecurityConfigError) as e:
        raise _usage_error(str(e)) from None


def _int_env(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise _usage_error(f"SESSIONS_{name}={value!r} is not a whole number") from None


def _auth_file_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--auth-file",
        default=_env("AUTH_FILE"),
        metavar="FILE",
        help=f"{text} (env SESSIONS_AUTH_FILE)",
    )


# --- sessions serve -------------------------------------------------------------------


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("security and limits")
    _auth_file_option(group, "credentials file: every call needs a bearer token from it")  # type: ignore[arg-type]
    group.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow an OPEN server (no credentials) on a non-loopback address",
    )
    group.add_argument("--tls-cert", default=_env("TLS_CERT"), metavar="PEM",
                       help="serve TLS with this certificate chain (env SESSIONS_TLS_CERT)")
    group.add_argument("--tls-key", default=_env("TLS_KEY"), metavar="PEM",
                       help="the certificate's private key (env SESSIONS_TLS_KEY)")
    group.add_argument("--tls-client-ca", default=_env("TLS_CLIENT_CA"), metavar="PEM",
                       help="mutual TLS: require client certificates signed by this CA "
                       "(env SESSIONS_TLS_CLIENT_CA)")
    group.add_argument(
        "--max-message-bytes", type=int,
        default=_int_env("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES), metavar="N",
        help="largest request or response (env SESSIONS_MAX_MESSAGE_BYTES; default 4 MiB); "
        "larger ones are refused with RESOURCE_EXHAUSTED",
    )
    group.add_argument(
        "--max-concurrent-rpcs", type=int,
        default=_int_env("MAX_CONCURRENT_RPCS", DEFAULT_MAX_CONCURRENT_RPCS), metavar="N",
        help="calls in progress at once, all connections together; more are refused with "
        "RESOURCE_EXHAUSTED (env SESSIONS_MAX_CONCURRENT_RPCS; default 1024; 0: unbounded)",
    )
    group.add_argument(
        "--max-streams-per-connection", type=int,
        default=_int_env("MAX_STREAMS_PER_CONNECTION", DEFAULT_MAX_STREAMS_PER_CONNECTION),
        metavar="N",
        help="calls in progress at once on one connection (HTTP/2 max concurrent streams; "
        "env SESSIONS_MAX_STREAMS_PER_CONNECTION; default 100)",
    )


def server_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    for flag in ("max_message_bytes", "max_streams_per_connection"):
        if getattr(args, flag) < 1:
            raise _usage_error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_concurrent_rpcs < 0:
        raise _usage_error("--max-concurrent-rpcs must be 0 (unbounded) or more")
    return {
        "auth_file": args.auth_file,
        "insecure_no_auth": args.insecure_no_auth,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "max_message_bytes": args.max_message_bytes,
        "max_concurrent_rpcs": args.max_concurrent_rpcs or None,
        "max_streams_per_connection": args.max_streams_per_connection,
    }


def reload_on_sighup(server: Any) -> None:
    """SIGHUP re-reads the credentials file (on a thread of its own, so the
    handler never logs or reads files in the middle of the main thread)."""

    def reload() -> None:
        log.info("SIGHUP: reloading credentials")
        server.reload_credentials()

    def handle(signum: int, frame: object) -> None:
        threading.Thread(target=reload, name="reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handle)


# --- sessions auth ----------------------------------------------------------------------


def add_auth_commands(commands: Any) -> None:
    auth = commands.add_parser("auth", help="manage the credentials file (tokens, roles)")
    sub = auth.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")

    add = sub.add_parser("add-token", help="make a token, print it once, store its hash")
    add.add_argument("--role", required=True, choices=credentials.ROLES)
    add.add_argument("--agent-id", action="append", default=[], metavar="ID",
                     help="agent id the token may act for (agents: one or more)")
    add.add_argument("--name", help="principal name, unique (default: the first agent id, "
                     "or ROLE-<token id>)")
    _auth_file_option(add, "the credentials file, created if missing")
    add.set_defaults(run=cmd_add_token)

    listing = sub.add_parser("list", help="names, roles, agent ids, dates (never tokens)")
    _auth_file_option(listing, "the credentials file")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    listing.set_defaults(run=cmd_list)

    revoke = sub.add_parser("revoke", help="revoke the live credential of that name")
    revoke.add_argument("name", metavar="NAME")
    _auth_file_option(revoke, "the credentials file")
    revoke.set_defaults(run=cmd_revoke)


def _auth_file(args: argparse.Namespace) -> str:
    if not args.auth_file:
        raise _usage_error("give --auth-file FILE or set SESSIONS_AUTH_FILE")
    return str(args.auth_file)


def cmd_add_token(args: argparse.Namespace) -> int:
    with usage_errors():
        token, made = credentials.add_token(_auth_file(args), args.role, args.agent_id, args.name)
    print(token)
    scope = f" for agent ids {', '.join(made.agent_ids)}" if made.agent_ids else ""
    print(
        f"added {made.principal}{scope} (token id {made.token_id}) to {args.auth_file}.\n"
        "The token above is shown only this once; only its hash is stored. "
        "A running server picks it up on SIGHUP.",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with usage_errors():
        loaded = credentials.load(_auth_file(args))
    if args.json:
        for c in loaded.credentials:
            shown = c.to_json()
            del shown["token_sha256"]
            shown["principal"] = c.principal
            print(json.dumps(shown))
        return 0
    rows = [("NAME", "ROLE", "AGENT IDS", "TOKEN ID", "CREATED", "STATUS")]
    for c in loaded.credentials:
        status = f"revoked {c.revoked_at}" if c.revoked else "live"
        rows.append((c.name, c.role, ",".join(c.agent_ids) or "-", c.token_id, c.created_at, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with usage_errors():
        revoked = credentials.revoke(_auth_file(args), args.name)
    print(
        f"revoked {revoked.principal} (token id {revoked.token_id}); "
        "send SIGHUP to running servers to apply it",
        file=sys.stderr,
    )
    return 0
