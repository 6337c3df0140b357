"""TLS and mutual TLS handshakes, with certificates made by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessions import credentials
from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.cli import main
from sessions.server import SessionsServer
from sessions.transport import SecurityConfigError
from tests.access.certs import Certificates, Pair


@pytest.fixture
def tls_server(tmp_path: Path, certificates: Certificates) -> Iterator:  # type: ignore[type-arg]
    started: list[SessionsServer] = []

    def start(*, mutual: bool) -> tuple[str, str]:
        path = tmp_path / "credentials.json"
        token, _ = credentials.add_token(path, "reader", name=f"r{len(started)}")
        server = SessionsServer(
            f"sqlite://{tmp_path}/s{len(started)}.db",
            "127.0.0.1:0",
            auth_file=path,
            tls_cert=str(certificates.server.cert),
            tls_key=str(certificates.server.key),
            tls_client_ca=str(certificates.ca) if mutual else None,
        )
        port = server.start()
        started.append(server)
        return f"127.0.0.1:{port}", token

    yield start
    for server in started:
        server.stop(grace=1)


def _channel(target: str, ca: Path | None, client: Pair | None = None) -> grpc.Channel:
    if ca is None:
        return grpc.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(target, creds)


def _list(channel: grpc.Channel, token: str) -> grpc.StatusCode:
    try:
        service_pb2_grpc.SynchronizationSessionServiceStub(channel).ListSessions(
            service_pb2.ListSessionsRequest(subject_container_id="c"),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=5,
        )
    except grpc.RpcError as e:
        return e.code()
    finally:
        channel.close()
    return grpc.StatusCode.OK


def test_tls_verifies_the_server_and_carries_the_token(tls_server, certificates: Certificates) -> None:  # type: ignore[no-untyped-def]
    target, token = tls_server(mutual=False)
    assert _list(_channel(target, certificates.ca), token) == grpc.StatusCode.OK
    assert (
        _list(_channel(target, certificates.ca), "sst_0000000000000000_" + "A" * 43) == grpc.StatusCode.UNAUTHENTICATED
    )
    # Plaintext to a TLS port, or a client that trusts another CA: no handshake.
    assert _list(_channel(target, None), token) == grpc.StatusCode.UNAVAILABLE
    assert _list(_channel(target, certificates.rogue_client.cert), token) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tls_server, certificates: Certificates) -> None:  # type: ignore[no-untyped-def]
    target, token = tls_server(mutual=True)
    assert _list(_channel(target, certificates.ca, certificates.client), token) == grpc.StatusCode.OK
    assert _list(_channel(target, certificates.ca), token) == grpc.StatusCode.UNAVAILABLE
    assert _list(_channel(target, certificates.ca, certificates.rogue_client), token) == grpc.StatusCode.UNAVAILABLE


def test_health_over_tls_and_mutual_tls(
    tls_server, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    target, _ = tls_server(mutual=False)
    channel = _channel(target, certificates.ca)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=10)
    channel.close()
    assert main(["health", "--target", target, "--tls-ca", str(certificates.ca)]) == 0
    assert "SERVING" in capsys.readouterr().out
    assert main(["health", "--target", target]) == 1  # plaintext to a TLS port

    mutual, _ = tls_server(mutual=True)
    client = ["--tls-cert", str(certificates.client.cert), "--tls-key", str(certificates.client.key)]
    # Health may still be NOT_SERVING while the projector catches up: retry briefly.
    for _ in range(50):
        if main(["health", "--target", mutual, "--tls-ca", str(certificates.ca), *client]) == 0:
            break
    else:
        pytest.fail("mutual TLS health never answered SERVING")
    capsys.readouterr()
    assert main(["health", "--target", mutual, "--tls-ca", str(certificates.ca)]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    # The name override: verify the certificate's DNS name while dialing an IP.
    assert (
        main(
            ["health", "--target", mutual, "--tls-ca", str(certificates.ca), "--tls-server-name", "localhost", *client]
        )
        == 0
    )


def test_inconsistent_tls_settings_are_refused(
    tmp_path: Path, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    with pytest.raises(SecurityConfigError, match="go together"):
        SessionsServer(url, "127.0.0.1:0", tls_cert=str(certificates.server.cert))
    with pytest.raises(SecurityConfigError, match="needs --tls-cert"):
        SessionsServer(url, "127.0.0.1:0", tls_client_ca=str(certificates.ca))
    with pytest.raises(SecurityConfigError, match="cannot read TLS key"):
        SessionsServer(url, "127.0.0.1:0", tls_cert=str(certificates.server.cert), tls_key=str(tmp_path / "none"))
    assert main(["health", "--target", "127.0.0.1:1", "--tls-cert", str(certificates.client.cert)]) == 2
    assert "go together" in capsys.readouterr().err
