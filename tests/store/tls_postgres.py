"""A PostgreSQL server of the test's own that accepts TLS connections only:
initdb into a temporary folder (as the ``postgres`` OS user when run as root),
a certificate made for it, ``hostssl`` only in pg_hba.conf, a free port. The
machine's own server is left alone."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.access.certs import Certificates, make_certificates
from tests.server_process import free_port


@dataclass(frozen=True)
class TLSPostgres:
    port: int
    certificates: Certificates  # ca: the CA that signed the server's certificate

    def url(self, **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres" + (f"?{params}" if params else "")


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


@contextmanager
def tls_postgres() -> Iterator[TLSPostgres]:
    # A folder of its own in the system's temporary folder, which the
    # postgres user can reach (pytest's tmp_path is private to this user).
    folder = Path(tempfile.mkdtemp(prefix="sessions-tls-pg-"))
    certificates = make_certificates(folder / "certs")
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    _as_owner([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
    for source, name in ((certificates.server.cert, "server.crt"), (certificates.server.key, "server.key")):
        target = data / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(target, "postgres")
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{folder}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "fsync = off\nmax_connections = 50\n"
        )
    # TLS only: no `host` line, so a connection without TLS finds no entry.
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
    )
    log = folder / "postgres.log"
    _as_owner([_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"])
    try:
        yield TLSPostgres(port, certificates)
    finally:
        _as_owner([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)
