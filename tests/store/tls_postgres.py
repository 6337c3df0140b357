"""A PostgreSQL server of the test's own that accepts TLS connections only
(tests/own_postgres.py): a certificate made for it, ``hostssl`` only in
pg_hba.conf."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.access.certs import Certificates, make_certificates
from tests.own_postgres import give_to_server, own_postgres


@dataclass(frozen=True)
class TLSPostgres:
    port: int
    certificates: Certificates  # ca: the CA that signed the server's certificate

    def url(self, **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres" + (f"?{params}" if params else "")


@contextmanager
def tls_postgres() -> Iterator[TLSPostgres]:
    made: list[Certificates] = []

    def install_certificate(data: Path) -> None:
        certificates = make_certificates(data.parent / "certs")
        for source, name in ((certificates.server.cert, "server.crt"), (certificates.server.key, "server.key")):
            shutil.copyfile(source, data / name)
            give_to_server(data / name)
        made.append(certificates)

    with own_postgres(
        # TLS only: no `host` line, so a connection without TLS finds no entry.
        hba="local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        settings="ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        prepare=install_certificate,
    ) as server:
        yield TLSPostgres(server.port, made[0])
