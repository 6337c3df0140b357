"""`sessions serve` with metrics: a scripted workload, then /metrics scraped
over HTTP; each family is there and holds what the workload implies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import sessions
from sessions import credentials
from sessions.api.protos import SESSION_SERVICE, service_pb2, service_pb2_grpc
from sessions.domain.policy import Policy
from sessions.server import SessionsServer
from tests.metrics.metrics_support import Scrape, scrape
from tests.requests import report_request
from tests.waiting import wait_until

FAMILIES = {
    "grpc_server_started": "counter",
    "grpc_server_handled": "counter",
    "grpc_server_handling_seconds": "histogram",
    "sessions_events_appended": "counter",
    "sessions_projection_position": "gauge",
    "sessions_log_head_position": "gauge",
    "sessions_projection_lag_events": "gauge",
    "sessions_projection_lag_seconds": "gauge",
    "sessions_parked_events": "gauge",
    "sessions_deadline_transitions": "counter",
    "sessions_store_up": "gauge",
    "sessions_group_commit_saves": "histogram",
    "sessions_idempotent_replays": "counter",
    "sessions_refusals": "counter",
    "sessions_build_info": "gauge",
    "sessions_projector_owner": "gauge",
}


class Served:
    def __init__(self, store_url: str, **kwargs: object):
        self.server = SessionsServer(store_url, "127.0.0.1:0", metrics_listen="127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
        port = self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.sessions = service_pb2_grpc.SynchronizationSessionServiceStub(self.channel)
        assert self.server.metrics is not None
        self.metrics_port = self.server.metrics.port

    def scrape(self) -> Scrape:
        return scrape(self.metrics_port)

    def caught_up(self) -> Scrape:
        """A scrape once the projector has folded the whole log."""
        found: list[Scrape] = []

        def folded() -> bool:
            found[:] = [self.scrape()]
            s = found[0]
            return s.value("sessions_projection_lag_events") == 0 and s.value(
                "sessions_projection_position"
            ) == s.value("sessions_log_head_position")

        assert wait_until(folded, 15, 0.05), "the projector did not catch up"
        return found[0]

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=1)


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    running = Served(store_url)
    try:
        yield running
    finally:
        running.close()


def handled(s: Scrape, method: str, code: str) -> float:
    return s.value("grpc_server_handled_total", grpc_service=SESSION_SERVICE, grpc_method=method, grpc_code=code)


def test_a_workload_is_counted(served: Served) -> None:
    stub = served.sessions
    opened = [
        stub.OpenSession(service_pb2.OpenSessionRequest(subject_container_id=f"c-{i}", agent_id="a", session_type=1))
        for i in range(2)
    ]
    ids = []
    for op in opened:
        response = service_pb2.OpenSessionResponse()
        op.response.Unpack(response)
        ids.append(response.opened_session.session_id)
    stub.ReportSessionProgress(report_request(ids[0]))
    stub.ReportSessionProgress(report_request(ids[1]))
    keyed = [("idempotency-key", "report-once")]
    first = stub.ReportSessionProgress(report_request(ids[0]), metadata=keyed)
    replayed = stub.ReportSessionProgress(report_request(ids[0]), metadata=keyed)
    assert replayed == first
    stub.GetSession(service_pb2.GetSessionRequest(session_id=ids[0]))
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetSession(service_pb2.GetSessionRequest(session_id="no-such-session"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as invalid:
        stub.GetSession(service_pb2.GetSessionRequest(session_id=""))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    s = served.caught_up()
    for family, kind in FAMILIES.items():
        assert s.families.get(family) == kind, family

    # Calls, by method and code; each handled call was started and timed.
    assert handled(s, "OpenSession", "OK") == 2
    assert handled(s, "ReportSessionProgress", "OK") == 4
    assert handled(s, "GetSession", "OK") == 1
    assert handled(s, "GetSession", "NOT_FOUND") == 1
    assert handled(s, "GetSession", "INVALID_ARGUMENT") == 1
    for method, calls in (("OpenSession", 2), ("ReportSessionProgress", 4), ("GetSession", 3)):
        labels = {"grpc_service": SESSION_SERVICE, "grpc_method": method, "grpc_type": "unary"}
        assert s.value("grpc_server_started_total", **labels) == calls
        assert s.value("grpc_server_handling_seconds_count", **labels) == calls
        assert s.value("grpc_server_handling_seconds_bucket", le="+Inf", **labels) == calls
    assert s.value("sessions_refusals_total", reason="validation") == 1
    assert s.value("sessions_refusals_total", reason="access") == 0
    assert s.value("sessions_refusals_total", reason="rate") == 0

    # Events, by type: the replay appended nothing.
    appended = {
        "sessions.ScheduleStarted": 2,
        "sessions.SessionStarted": 2,
        "sessions.SessionOpened": 2,
        "sessions.ProgressReported": 3,
        "sessions.OperationRecorded": 5,
    }
    for topic, count in appended.items():
        assert s.value("sessions_events_appended_total", type=topic) == count, topic
    assert s.value("sessions_events_appended_total") == sum(appended.values())
    assert s.value("sessions_idempotent_replays_total") == 1
    # One save per command that wrote; the replay's save collided with the
    # first answer's operation record (that is how a used key is found).
    assert s.value("sessions_group_commit_saves_sum") == 5 + 1
    assert s.value("sessions_deadline_transitions_total", kind="stall") == 0
    assert s.value("sessions_deadline_transitions_total", kind="expiry") == 0

    # The store and the read model: caught up, nothing parked.
    assert s.value("sessions_store_up") == 1
    assert s.value("sessions_log_head_position") >= sum(appended.values())
    assert s.value("sessions_projection_lag_seconds") == 0
    assert s.value("sessions_parked_events") == 0
    assert s.labels_of("sessions_build_info") == [{"version": sessions.version()}]
    assert s.value("sessions_build_info") == 1


def test_the_head_and_position_follow_the_log(served: Served) -> None:
    before = served.caught_up()
    served.sessions.OpenSession(service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1))
    after = served.caught_up()
    # An open appends four events; the read model folded up to them.
    assert after.value("sessions_log_head_position") >= before.value("sessions_log_head_position") + 4
    assert after.value("sessions_projection_position") == after.value("sessions_log_head_position")


def test_stalls_and_expiries_are_counted(tmp_path: Path) -> None:
    policy = Policy.from_seconds(session_ttl=1.5, heartbeat_grace=0.3, sync_interval=0, full_sync_period=86400)
    served = Served(f"sqlite://{tmp_path}/s.db", policy=policy, deadline_interval=0.1)
    try:
        served.sessions.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1)
        )

        def expired() -> bool:
            return served.scrape().value("sessions_deadline_transitions_total", kind="expiry") >= 1

        assert wait_until(expired, 15, 0.05)
        s = served.scrape()
        assert s.value("sessions_deadline_transitions_total", kind="stall") == 1
        assert s.value("sessions_deadline_transitions_total", kind="expiry") == 1
        assert s.value("sessions_events_appended_total", type="sessions.SessionStalled") == 1
        assert s.value("sessions_events_appended_total", type="sessions.SessionExpired") == 1
    finally:
        served.close()


def test_refusals_of_access_control_are_counted(tmp_path: Path) -> None:
    auth = tmp_path / "credentials"
    reader = credentials.add_token(auth, "reader", name="dash")[0]
    served = Served(f"sqlite://{tmp_path}/s.db", auth_file=auth)
    try:
        stub = served.sessions
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.GetSession(service_pb2.GetSessionRequest(session_id="x"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as denied:
            stub.OpenSession(
                service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1),
                metadata=[("authorization", f"Bearer {reader}")],
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetSession(
                service_pb2.GetSessionRequest(session_id="x"), metadata=[("authorization", f"Bearer {reader}")]
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        s = served.scrape()
        assert handled(s, "GetSession", "UNAUTHENTICATED") == 1
        assert handled(s, "OpenSession", "PERMISSION_DENIED") == 1
        assert handled(s, "GetSession", "NOT_FOUND") == 1
        assert s.value("sessions_refusals_total", reason="access") == 2
        assert s.value("sessions_refusals_total", reason="validation") == 0
        assert s.value("sessions_events_appended_total") == 0
    finally:
        served.close()


def test_two_servers_in_one_process_count_apart(tmp_path: Path) -> None:
    one, two = Served(f"sqlite://{tmp_path}/one.db"), Served(f"sqlite://{tmp_path}/two.db")
    try:
        one.sessions.OpenSession(service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1))
        assert handled(one.scrape(), "OpenSession", "OK") == 1
        assert handled(two.scrape(), "OpenSession", "OK") == 0
        assert two.scrape().value("sessions_events_appended_total") == 0
    finally:
        one.close()
        two.close()


def test_a_refusal_by_grpc_itself_is_started_but_never_handled(tmp_path: Path) -> None:
    # grpc refuses a request over --max-message-bytes before any handler
    # runs, and does not tell interceptors how the call ended (see README,
    # Metrics): it shows as started without a handled count.
    served = Served(f"sqlite://{tmp_path}/s.db", max_message_bytes=1024)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            served.sessions.ListSessions(
                service_pb2.ListSessionsRequest(subject_container_id="c", filter="x" * 2000), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        s = served.scrape()
        assert s.value("grpc_server_started_total", grpc_method="ListSessions") == 1
        assert s.value("grpc_server_handled_total", grpc_method="ListSessions") == 0
    finally:
        served.close()


def test_the_rest_face_is_counted_by_route_method_and_status(store_url: str) -> None:
    import json
    import urllib.error
    import urllib.request

    server = SessionsServer(store_url, "127.0.0.1:0", metrics_listen="127.0.0.1:0", http_listen="127.0.0.1:0")
    server.start()
    try:
        assert server.metrics is not None
        base = f"http://127.0.0.1:{server.http_port}/organization-manager/v1/idp/synchronization-sessions"
        body = json.dumps({"subjectContainerId": "c-rest", "agentId": "a", "sessionType": "AD_SYNC"}).encode()
        opened = urllib.request.urlopen(urllib.request.Request(f"{base}:open", data=body, method="POST"), timeout=10)
        assert opened.status == 200
        for missing in ("ses-none-1", "ses-none-2"):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"{base}/{missing}", timeout=10)
            assert answer.value.code == 404
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/no/such/route", timeout=10)
        for made_up in ("XONE", "XTWO"):  # a caller cannot make a label of its own
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(urllib.request.Request(f"{base}/ses-x", method=made_up), timeout=10)

        figures = scrape(server.metrics.port)
        assert figures.families["sessions_http_requests"] == "counter"
        assert figures.families["sessions_http_request_seconds"] == "histogram"
        open_route = "/organization-manager/v1/idp/synchronization-sessions:open"
        get_route = "/organization-manager/v1/idp/synchronization-sessions/{session_id}"
        counted = figures.value
        assert counted("sessions_http_requests_total", route=open_route, http_method="POST", http_status="200") == 1
        assert counted("sessions_http_requests_total", route=get_route, http_method="GET", http_status="404") == 2
        assert counted("sessions_http_requests_total", route="none", http_status="404") == 1
        methods = {labels["http_method"] for labels in figures.labels_of("sessions_http_requests_total")}
        assert methods == {"GET", "POST", "other"}
        assert counted("sessions_http_requests_total", route="none", http_method="other", http_status="405") == 2
        assert figures.value("sessions_http_request_seconds_count", route=get_route) == 2
    finally:
        server.stop(grace=1)
