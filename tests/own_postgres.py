"""A PostgreSQL server of the test's own, for what the machine's shared
server cannot show: initdb into a temporary folder (as the ``postgres`` OS
user when run as root), the test's settings and pg_hba.conf, a free port, an
address of the test's choosing. The machine's own server is left alone.

Used by tests/store/tls_postgres.py (TLS only) and tests/scaleout
(listening on a veth address that a network namespace reaches)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.server_process import free_port


@dataclass(frozen=True)
class OwnPostgres:
    host: str
    port: int
    folder: Path  # its data folder, socket and log are in it

    def url(self, dbname: str = "postgres", **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}" + (f"?{params}" if params else "")

    def log(self) -> str:
        return (self.folder / "postgres.log").read_text(errors="replace")[-4000:]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise FileNotFoundError(f"{name}: no PostgreSQL server binaries on this machine")
    return found[-1]


def _as_owner(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a server binary; as root, as the ``postgres`` user (initdb and
    postgres refuse root)."""
    command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}{done.stdout}")
    return done


def give_to_server(path: Path) -> None:
    """A file the server reads (a key must not be readable by others)."""
    path.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")


@contextmanager
def own_postgres(
    *,
    host: str = "127.0.0.1",
    hba: str = "local all all trust\nhost all all 127.0.0.1/32 trust\n",
    settings: str = "",
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[OwnPostgres]:
    """A server listening on ``host`` (an address of this machine), with
    ``hba`` as its pg_hba.conf and ``settings`` added to postgresql.conf;
    ``prepare(data folder)`` runs after initdb (files the settings name)."""
    # A folder of its own in the system's temporary folder, which the
    # postgres user can reach (pytest's tmp_path is private to this user).
    folder = Path(tempfile.mkdtemp(prefix="sessions-own-pg-"))
    data = folder / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        _as_owner([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
        if prepare is not None:
            prepare(data)
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {port}\nlisten_addresses = '{host}'\n"
                f"unix_socket_directories = '{folder}'\n"
                f"fsync = off\nmax_connections = 50\n{settings}"
            )
        (data / "pg_hba.conf").write_text(hba)
        try:
            _as_owner([_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-t", "60", "start"])
            yield OwnPostgres(host, port, folder)
        finally:
            # Also after a failed start (pg_ctl -w gave up while the server
            # came up): stop whatever runs; nothing running is no error here.
            _stop(data)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stop(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        _as_owner([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
