"""Access-control fixtures: a credentials file with one token per role, and
one server per backend per module that enforces it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from sessions import credentials
from sessions.server import SessionsServer
from tests.access.certs import Certificates, make_certificates
from tests.conftest import BACKENDS

# A well-formed token that no credentials file holds.
UNKNOWN_TOKEN = "sst_0123456789abcdef_" + "A" * 43


@dataclass(frozen=True)
class Tokens:
    admin: str
    agent_owner: str  # bound to agent-1 (and agent-3)
    agent_other: str  # bound to agent-2
    reader: str
    auditor: str
    revoked: str  # was an agent for agent-1

    def for_role(self, role: str) -> str | None:
        if role == "none":
            return None
        if role == "unknown":
            return UNKNOWN_TOKEN
        return getattr(self, role)


def make_credentials(path: Path) -> Tokens:
    tokens = Tokens(
        admin=credentials.add_token(path, "admin", name="ops")[0],
        agent_owner=credentials.add_token(path, "agent", ["agent-1", "agent-3"], name="owner")[0],
        agent_other=credentials.add_token(path, "agent", ["agent-2"], name="other")[0],
        reader=credentials.add_token(path, "reader", name="dash")[0],
        auditor=credentials.add_token(path, "auditor", name="audit")[0],
        revoked=credentials.add_token(path, "agent", ["agent-1"], name="stolen")[0],
    )
    credentials.revoke(path, "stolen")
    return tokens


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``store_url``, but one store per backend for the whole module."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path_factory.mktemp('store')}/sessions.db"
        return
    admin = request.getfixturevalue("postgres_admin")
    name = f"sessions_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class SecuredServer:
    server: SessionsServer
    channel: grpc.Channel
    target: str
    tokens: Tokens
    auth_file: Path


@pytest.fixture(scope="module")
def secured(module_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServer]:
    auth_file = tmp_path_factory.mktemp("auth") / "credentials.json"
    tokens = make_credentials(auth_file)
    server = SessionsServer(module_store_url, "127.0.0.1:0", auth_file=auth_file)
    port = server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    try:
        yield SecuredServer(server, channel, target, tokens, auth_file)
    finally:
        channel.close()
        server.stop(grace=1)
