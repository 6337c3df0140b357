"""Transport security and limits: where the server may listen, TLS on both
ends, and the options every CLI command that talks to a server shares."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `sessions auth` and --help stay quick
    import grpc

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 1024
DEFAULT_MAX_STREAMS_PER_CONNECTION = 100
# Threads serving calls (--threads), and GetSession and ListSessions on a
# pool of their own (--read-threads; 0: on --threads). Chosen by measurement
# (bench/README.md, issue 18). Here, not in sessions.server, so that the CLI
# names them without importing the server at start.
DEFAULT_THREADS = 32
DEFAULT_READ_THREADS = 4


class SecurityConfigError(ValueError):
    """A serving or client configuration that is unsafe or inconsistent
    (the CLI exits 2 with the message)."""


def listen_host(listen: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SecurityConfigError(f"listen address {listen!r} is not HOST:PORT")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(listen: str) -> bool:
    """Whether ``HOST:PORT`` binds only the loopback interface. An empty host,
    a wildcard (0.0.0.0, ::) and any name but ``localhost`` count as public."""
    host = listen_host(listen)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SecurityConfigError(f"cannot read {what} {path}: {e.strerror}") from None


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str | None = None  # set: mutual TLS, a client certificate is required

    @classmethod
    def from_options(
        cls, cert: str | None, key: str | None, client_ca: str | None
    ) -> ServerTLS | None:
        if not cert and not key:
            if client_ca:
                raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key")
            return None
        if not (cert and key):
            raise SecurityConfigError("--tls-cert and --tls-key go together")
        return cls(cert, key, client_ca or None)

    def credentials(self) -> grpc.ServerCredentials:
        import grpc

        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        root = _read(self.client_ca, "client CA bundle") if self.client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)

    def describe(self) -> str:
        return "mutual TLS (client certificates required)" if self.client_ca else "TLS"


def server_options(
    max_message_bytes: int, max_streams_per_connection: int, reuse_port: bool = False
) -> list[tuple[str, int]]:
    """``reuse_port``: SO_REUSEPORT, for the workers of `serve --workers N`,
    which share one listen address (otherwise a port in use fails to bind)."""
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls at once on one connection.
        ("grpc.max_concurrent_streams", max_streams_per_connection),
    ]


# --- the client side (CLI commands that talk to a server) ---------------------------


def add_client_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--token",
        default=env("SESSIONS_TOKEN"),
        help="bearer token sent as 'authorization' metadata (env SESSIONS_TOKEN, preferred: "
        "a flag is visible to other local users)",
    )
    group.add_argument(
        "--tls-ca",
        default=env("SESSIONS_TLS_CA"),
        metavar="PEM",
        help="connect with TLS, verifying the server against this CA bundle (env SESSIONS_TLS_CA)",
    )
    group.add_argument(
        "--tls-cert",
        default=env("SESSIONS_CLIENT_TLS_CERT"),
        metavar="PEM",
        help="client certificate for mutual TLS (env SESSIONS_CLIENT_TLS_CERT)",
    )
    group.add_argument(
        "--tls-key",
        default=env("SESSIONS_CLIENT_TLS_KEY"),
        metavar="PEM",
        help="client certificate's key (env SESSIONS_CLIENT_TLS_KEY)",
    )
    group.add_argument(
        "--tls-server-name",
        default=env("SESSIONS_TLS_SERVER_NAME"),
        metavar="NAME",
        help="name to verify in the server's certificate instead of the target's host "
        "(env SESSIONS_TLS_SERVER_NAME)",
    )


def client_channel(args: argparse.Namespace, target: str) -> grpc.Channel:
    import grpc

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SecurityConfigError("--tls-cert and --tls-key go together")
    if not (args.tls_ca or args.tls_cert):
        if args.tls_server_name:
            raise SecurityConfigError("--tls-server-name needs --tls-ca")
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.tls_ca, "CA bundle") if args.tls_ca else None,
        private_key=_read(args.tls_key, "TLS key") if args.tls_key else None,
        certificate_chain=_read(args.tls_cert, "TLS certificate") if args.tls_cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def call_metadata(args: argparse.Namespace) -> Sequence[tuple[str, str]]:
    return [("authorization", f"Bearer {args.token}")] if args.token else []
