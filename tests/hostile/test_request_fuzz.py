"""Hostile requests to every method, on both backends (issue "Hostile input").

For each method, one server; hypothesis then draws requests (valid-ish fields
mixed with NUL and other controls, unicode, lengths around the documented
limits, enums and int64s in and out of range, real ids of a live session)
and raw bytes (garbage, truncated or bit-flipped requests, fields with the
wrong wire type), sends each over the real channel and checks the answer
against the contract (see hostile_support): never INTERNAL or UNKNOWN;
INVALID_ARGUMENT, naming the field, whenever a rule is broken; undecodable
bytes refused as ``request`` with the connection still usable; a refused
write leaves the target session, its history and the log head as they were.
Afterwards the projector must reach the log head.

Examples are fixed (derandomize) and few, so that a run takes seconds.
"""

from __future__ import annotations

import traceback

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings

from sessions.api.protos import audit_pb2, service_pb2
from tests.hostile.hostile_support import (
    CLOSE,
    GARBAGE,
    GET,
    HISTORY,
    LIST,
    METHODS,
    NUL,
    OPEN,
    REPORT,
    SESSION_AT,
    Draft,
    Method,
    Prober,
    Raw,
    Real,
    requests,
    wait_for_projector,
)
from tests.waiting import wait_until

EXAMPLES_PER_METHOD = 60
PROJECTOR_TIMEOUT = 10.0
TIMESTAMP_MAX_SECONDS = 253_402_300_799

GOOD_ENTRY = [(1, [(1, 1, 0)])]


def id_fields(method: Method) -> dict[str, object]:
    """A request of ``method`` that breaks no rule (ids are real)."""
    if method is OPEN:
        return {"subject_container_id": Real("container"), "agent_id": Real("agent"), "session_type": 1}
    if method is REPORT:
        return {"session_id": Real("session"), "progress_entries": GOOD_ENTRY}
    if method is LIST:
        return {"subject_container_id": Real("container"), "page_size": 0, "page_token": "", "filter": ""}
    if method is SESSION_AT:
        return {"session_id": Real("session"), "point": ("version", 1)}
    if method is CLOSE:
        return {"session_id": Real("session"), "failed": False, "fail_reason": ""}
    name = "operation_id" if method.service.endswith("OperationService") else "session_id"
    return {name: Real("operation" if name == "operation_id" else "session")}


def with_fields(method: Method, **changes: object) -> Draft:
    return Draft({**id_fields(method), **changes})


def explicit_examples(method: Method) -> list[Draft | Raw]:
    """The issue's own cases, always run: a NUL (and another control
    character) in the id fields, undecodable bytes, and per method the other
    string fields and out-of-range values it names."""
    cases: list[Draft | Raw] = [Raw("bytes", GARBAGE[0]), Raw("bytes", GARBAGE[1])]
    for name, value in id_fields(method).items():
        if isinstance(value, Real):
            cases.append(with_fields(method, **{name: Real(value.kind, after=NUL)}))
            cases.append(with_fields(method, **{name: Real(value.kind, before="\x1b")}))
    if method is OPEN:  # in a new container: a session would be opened
        cases.append(with_fields(method, subject_container_id="fresh", agent_id="agent-1\x00"))
    if method is CLOSE:
        cases.append(with_fields(method, failed=True, fail_reason="LDAP\x00down"))
    if method is LIST:
        cases.append(with_fields(method, filter='agent_id = "a\x00"'))
        cases.append(with_fields(method, page_token=Real("page_token", after=NUL)))
    if method is SESSION_AT:
        for point in ((TIMESTAMP_MAX_SECONDS + 1, 0), (1, -1), (1, 10**9)):
            cases.append(with_fields(method, point=("as_of", point)))
    return cases


def run_hostile(prober: Prober, method: Method, max_examples: int) -> None:
    def answers_follow_the_contract(drawn: Draft | Raw) -> None:
        prober.check(method, drawn)

    for case in explicit_examples(method):
        answers_follow_the_contract = example(drawn=case)(answers_follow_the_contract)
    prober.snapshot = prober.take_snapshot()
    settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(drawn=requests(method))(answers_follow_the_contract))()


def failure_report(method: Method, error: BaseException) -> str:
    """The assertion and hypothesis's falsifying example, for each bug found."""
    errors = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
    parts = []
    for one in errors:
        text = "".join(traceback.format_exception_only(one)).strip()
        parts.append(f"--- {method}: {text}")
    return "\n".join(parts)


def test_hostile_requests_get_contract_answers(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    """Every method in turn on one server (a server per method would spend
    more time starting than probing); a method's failures do not stop the
    others, and all are reported together."""
    running = start_server(store_url)
    prober = Prober(running)
    failures = []
    for method in METHODS:
        try:
            run_hostile(prober, method, EXAMPLES_PER_METHOD)
        except (AssertionError, BaseExceptionGroup) as error:
            failures.append(failure_report(method, error))
    try:
        wait_for_projector(running, PROJECTOR_TIMEOUT, wait_until)
        parked = running.server.projector.table.parked_count()
        assert parked == 0, f"the projector parked {parked} events"
    except AssertionError as error:
        failures.append(f"--- after all methods: {error}")
    if failures:
        pytest.fail("the contract is broken:\n"
                    + "\n".join(failures), pytrace=False)


# --- NUL: the same answer on both backends ---------------------------------------------


def nul_requests(real: dict[str, str]) -> list[tuple[Method, bytes, str]]:
    """(method, request bytes, the field holding the NUL)."""
    session = real["session"]
    return [
        (OPEN, service_pb2.OpenSessionRequest(
            subject_container_id="c\x00", agent_id="agent-1", session_type=1).SerializeToString(),
         "subject_container_id"),
        (OPEN, service_pb2.OpenSessionRequest(
            subject_container_id="c", agent_id="agent-1\x00", session_type=1).SerializeToString(),
         "agent_id"),
        (CLOSE, service_pb2.CloseSessionRequest(
            session_id=session, failed=True, fail_reason="\x00").SerializeToString(), "fail_reason"),
        (REPORT, service_pb2.ReportSessionProgressRequest(session_id=session + "\x00").SerializeToString(),
         "session_id"),
        (GET, service_pb2.GetSessionRequest(session_id="\x00" + session).SerializeToString(),
         "session_id"),
        (LIST, service_pb2.ListSessionsRequest(
            subject_container_id="container-1", filter='agent_id = "\x00"').SerializeToString(),
         "filter"),
        (LIST, service_pb2.ListSessionsRequest(
            subject_container_id="container-1", page_token="\x00").SerializeToString(), "page_token"),
        (LIST, service_pb2.ListSessionsRequest(subject_container_id="container-1\x00").SerializeToString(),
         "subject_container_id"),
        (HISTORY, audit_pb2.StreamHistoryRequest(session_id=session + "\x00").SerializeToString(),
         "session_id"),
    ]


@pytest.mark.postgres
def test_nul_is_refused_identically_on_both_backends(start_server, tmp_path, postgres_url) -> None:  # type: ignore[no-untyped-def]
    answers = {}
    for backend, url in (("sqlite", f"sqlite://{tmp_path}/s.db"), ("postgresql", postgres_url)):
        prober = Prober(start_server(url))
        head = prober.head()
        seen = []
        for method, data, field in nul_requests(prober.real):
            answer = prober.send(method, data)
            seen.append((str(method), field, answer.code, answer.violations))
        assert prober.head() == head, f"{backend}: a request with a NUL stored something"
        answers[backend] = seen
        for method, field, code, violations in seen:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and field in (violations or ()), (
                f"{backend}: {method} with a NUL in {field} answered {code.name} {violations}"
            )
    assert answers["sqlite"] == answers["postgresql"]


# --- undecodable requests do not use up a connection --------------------------------


def test_undecodable_requests_do_not_use_up_the_connection(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    """Each is answered and done with: more of them than a connection may
    have calls at once, and the same connection still serves a good request.
    (A refusal that left its HTTP/2 stream open would make the connection
    refuse every call, REFUSED_STREAM, after max_streams_per_connection.)"""
    running = start_server(store_url)
    prober = Prober(running)
    limit = running.server.max_streams_per_connection
    for sent in range(1, limit + 21):
        answer = prober.send(GET, GARBAGE[0])
        # (What the answer must be is the property test's business; here:
        # that there is one.)
        assert answer.code != grpc.StatusCode.UNAVAILABLE, (
            f"undecodable request {sent} (max_streams_per_connection={limit}): {answer}"
        )
    session = service_pb2.GetSessionRequest(session_id=prober.real["session"]).SerializeToString()
    assert prober.send(GET, session).code == grpc.StatusCode.OK
