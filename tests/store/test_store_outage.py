"""A PostgreSQL outage, with a real server process reaching PostgreSQL
through a proxy the test takes down: while the store is away calls answer
UNAVAILABLE quickly (not DEADLINE_EXCEEDED), the service answers again
within moments of the store coming back, and the log says each once."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.store.application import SessionsApplication
from sessions.store.health import StoreUnavailable
from sessions.store.urls import parse_store_url
from tests.server_process import ServerProcess
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until

OUTAGE = 10.0  # s
CLIENT_DEADLINE = 5.0  # s, a typical client's


@dataclass
class Answer:
    started: float
    ended: float
    code: grpc.StatusCode

    @property
    def took(self) -> float:
        return self.ended - self.started


def _open(stub, container: str) -> str:  # type: ignore[no-untyped-def]
    opened = service_pb2.OpenSessionResponse()
    stub.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="a", session_type=1),
        timeout=CLIENT_DEADLINE,
    ).response.Unpack(opened)
    assert opened.result == service_pb2.SUCCESS
    return opened.opened_session.session_id


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(server: ServerProcess, service: str) -> int:
    check = health_pb2_grpc.HealthStub(server.channel).Check
    return check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def _call_until_stopped(stub, session_id: str, stop: threading.Event, answers: list[Answer]) -> None:  # type: ignore[no-untyped-def]
    """Writes one after another, alternating a heartbeat and a new session."""
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        try:
            if n % 2:
                stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id), timeout=CLIENT_DEADLINE)
            else:
                _open(stub, f"outage-{n}")
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        answers.append(Answer(started, time.monotonic(), code))
        stop.wait(0.1)


def _proxied(postgres_url: str) -> tuple[TcpProxy, str]:
    direct = urlsplit(postgres_url)
    proxy = TcpProxy((direct.hostname or "127.0.0.1", direct.port or 5432))
    proxy.up()
    return proxy, f"postgresql://{direct.username}@127.0.0.1:{proxy.port}{direct.path}"


@pytest.mark.postgres
@pytest.mark.slow
def test_an_outage_answers_unavailable_and_ends_when_the_store_is_back(postgres_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proxy, proxied = _proxied(postgres_url)
    server = ServerProcess(proxied, tmp_path / "server.log")
    stop = threading.Event()
    answers: list[Answer] = []
    try:
        server.wait_serving()
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)
        session_id = _open(stub, "before")
        for _ in range(3):
            stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id), timeout=CLIENT_DEADLINE)
        caller = threading.Thread(target=_call_until_stopped, args=(stub, session_id, stop, answers))
        caller.start()
        assert wait_until(lambda: len(answers) >= 5, 10, interval=0.01)  # calls flowing

        went_down = proxy.down()
        # Readiness follows the store; liveness stays SERVING.
        assert wait_until(lambda: _health(server, "") == NOT_SERVING, 5, interval=0.05)
        assert _health(server, "liveness") == SERVING
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - went_down)))  # (the outage itself)
        came_back = proxy.up()

        def ok_since_back() -> int:
            return sum(a.started >= came_back and a.code == grpc.StatusCode.OK for a in list(answers))

        assert wait_until(lambda: ok_since_back() >= 5, 15, interval=0.01)  # answered again, and on
        stop.set()
        caller.join(CLIENT_DEADLINE + 5)

        during = [a for a in answers if a.started >= went_down and a.ended <= came_back]
        assert len(during) >= 10, answers
        codes = {a.code for a in during}
        # (a call under way when the connections broke may still have made it)
        assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK}, codes
        assert sum(a.code == grpc.StatusCode.UNAVAILABLE for a in during) >= len(during) - 1
        assert grpc.StatusCode.DEADLINE_EXCEEDED not in {a.code for a in answers}
        slowest = max(a.took for a in during)
        assert slowest < 2.0, f"an answer during the outage took {slowest:.2f}s"

        first_ok = min(a.ended for a in answers if a.started >= came_back and a.code == grpc.StatusCode.OK)
        recovery = first_ok - came_back
        print(f"outage answers: {len(during)}, slowest {slowest:.3f}s, median "
              f"{sorted(a.took for a in during)[len(during) // 2]:.3f}s; first write "
              f"answered {recovery:.2f}s after the store came back")
        assert recovery < 3.0, f"first write answered {recovery:.2f}s after the store came back"
        after = [a for a in answers if a.started >= first_ok]
        assert after and all(a.code == grpc.StatusCode.OK for a in after), after
        assert _health(server, "") == SERVING
    finally:
        stop.set()
        code = server.stop()
        proxy.close()
    log = server.log_path.read_text()
    assert code == 0, log
    assert log.count("store unavailable:") == 1, log
    assert log.count("store is back") == 1, log
    assert "Traceback" not in log, log
    assert "LISTEN failed" not in log, log  # (the store's line says it)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_store_is_found_again_after_the_pool_gave_up_reconnecting(postgres_url: str, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "sessions.store")
    proxy, proxied = _proxied(postgres_url)
    app = SessionsApplication(parse_store_url(proxied))
    try:
        app.factory.datastore.pool.reconnect_timeout = 1.0  # (5 min by default)
        app.recorder.max_notification_id()
        proxy.down()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            app.recorder.max_notification_id()  # a broken connection, then the store is gone
        assert time.monotonic() - started < 1.5
        time.sleep(2.5)  # the pool's own reconnection attempts give up
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            app.recorder.max_notification_id()
        assert time.monotonic() - started < 1.5
        came_back = proxy.up()

        def answers() -> bool:
            try:
                app.recorder.max_notification_id()
            except StoreUnavailable:
                return False
            return True

        assert wait_until(answers, 5, interval=0.05)
        assert time.monotonic() - came_back < 2.0
    finally:
        app.close()
        proxy.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "sessions.store"]
    assert sum(line.startswith("store unavailable:") for line in lines) == 1, lines
    assert sum(line.startswith("store is back") for line in lines) == 1, lines
