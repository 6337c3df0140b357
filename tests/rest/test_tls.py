"""With --tls-cert/--tls-key the REST face serves HTTPS with the same
certificate, and with --tls-client-ca it requires client certificates too."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from sessions.server import SessionsServer
from tests.access.certs import Certificates, make_certificates
from tests.rest.conftest import SESSIONS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _context(certificates: Certificates, client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificates.ca))
    if client:
        context.load_cert_chain(str(certificates.client.cert), str(certificates.client.key))
    return context


def _served_in_plaintext(url: str) -> bool:
    try:
        answer = httpx.get(url, timeout=5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return False
    return answer.headers.get("content-type") == "application/json"


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_rest_over_tls(tmp_path: Path, certificates: Certificates, mutual: bool) -> None:
    server = SessionsServer(
        "memory://",
        "127.0.0.1:0",
        http_listen="127.0.0.1:0",
        tls_cert=str(certificates.server.cert),
        tls_key=str(certificates.server.key),
        tls_client_ca=str(certificates.ca) if mutual else None,
    )
    server.start()
    try:
        url = f"https://127.0.0.1:{server.http_port}{SESSIONS}/ses-none"
        answer = httpx.get(url, verify=_context(certificates, client=True))
        assert answer.status_code == 404 and answer.json()["code"] == 5
        assert not _served_in_plaintext(url.replace("https:", "http:"))
        if mutual:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(url, verify=_context(certificates, client=False), timeout=5)
    finally:
        server.stop(grace=1)
