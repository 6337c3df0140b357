"""Hostile requests for every method, and what the contract says each answer
must be (issue "Hostile input").

A drawn *draft* is plain data: field values, some of them ``Real`` markers
that stand for values only the running server knows (the id of a live
session, of a recorded operation, a page token it issued). The ``Prober``
resolves a draft against its server, serializes it (or mangles the bytes, for
raw drafts) and sends the bytes as they are, so a structured request and a
garbled one take the same path. What the answer must be is decided from the
bytes alone: they are decoded the way the server decodes them, and the
decoded fields are judged against the documented rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import strategies as st

from sessions.api.protos import (
    AUDIT_SERVICE,
    OPERATION_SERVICE,
    SESSION_SERVICE,
    audit_pb2,
    operation_pb2,
    operation_service_pb2,
    service_pb2,
    session_pb2,
)

# --- the contract ----------------------------------------------------------------

Code = grpc.StatusCode
# RESOURCE_EXHAUSTED and UNAVAILABLE are allowed by the contract in general,
# but nothing here is big or slow enough to earn them: they count as failures.
ALLOWED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.PERMISSION_DENIED,
        Code.ABORTED,
    }
)
CALL_TIMEOUT = 10.0

MAX_ID = 50
MAX_FAIL_REASON = 256
MAX_FILTER = 1000
MAX_PAGE_TOKEN = 2000
MAX_PAGE_SIZE = 1000
MAX_IDEMPOTENCY_KEY = 128
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
NANOS = (0, 999_999_999)

# Ids and keys must not hold these (C0 controls and DEL); every string field
# must not hold NUL.
CONTROL = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
NUL = "\x00"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request_type: type[Message]
    writes: bool = False
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def __str__(self) -> str:
        return self.name if self.service == SESSION_SERVICE else f"{self.service}/{self.name}"


OPEN = Method(SESSION_SERVICE, "OpenSession", service_pb2.OpenSessionRequest, writes=True)
CLOSE = Method(SESSION_SERVICE, "CloseSession", service_pb2.CloseSessionRequest, writes=True)
REPORT = Method(
    SESSION_SERVICE, "ReportSessionProgress", service_pb2.ReportSessionProgressRequest, writes=True
)
HEARTBEAT = Method(SESSION_SERVICE, "Heartbeat", service_pb2.HeartbeatRequest, writes=True)
GET = Method(SESSION_SERVICE, "GetSession", service_pb2.GetSessionRequest)
LIST = Method(SESSION_SERVICE, "ListSessions", service_pb2.ListSessionsRequest)
GET_OPERATION = Method(OPERATION_SERVICE, "Get", operation_service_pb2.GetOperationRequest)
CANCEL_OPERATION = Method(OPERATION_SERVICE, "Cancel", operation_service_pb2.CancelOperationRequest)
HISTORY = Method(AUDIT_SERVICE, "StreamHistory", audit_pb2.StreamHistoryRequest, streaming=True)
SESSION_AT = Method(AUDIT_SERVICE, "GetSessionAt", audit_pb2.GetSessionAtRequest)

METHODS = (
    OPEN, CLOSE, REPORT, HEARTBEAT, GET, LIST, GET_OPERATION, CANCEL_OPERATION, HISTORY, SESSION_AT
)


@dataclass
class Expected:
    """``refused``: fields the contract refuses in this request (the answer
    must be INVALID_ARGUMENT naming one of them, or a ``suspect``);
    ``suspect``: fields holding unusual values, which a refusal may name too.
    A name covers its sub-fields: ``progress_entries`` covers
    ``progress_entries[0].change_info[1].failed``."""

    refused: set[str] = field(default_factory=set)
    suspect: set[str] = field(default_factory=set)

    def names(self, violation: str) -> bool:
        return any(
            violation == name or violation.startswith((name + ".", name + "["))
            for name in self.refused | self.suspect
        )


# --- values only the server knows -------------------------------------------------


@dataclass(frozen=True)
class Real:
    """A real value of the running server (``kind``), with text around it."""

    kind: str  # session, operation, container, agent, page_token
    before: str = ""
    after: str = ""

    def __repr__(self) -> str:
        around = "".join(f", {k}={v!r}" for k, v in (("before", self.before), ("after", self.after)) if v)
        return f"Real({self.kind!r}{around})"


Text = str | Real


def text_field(value: str, *, limit: int, benign: Iterable[str]) -> tuple[bool, bool]:
    """(refused, suspect) for a free-text field: NUL or too long is refused."""
    refused = NUL in value or len(value) > limit
    return refused, bool(value) and value not in benign


def id_field(value: str, *, benign: Iterable[str]) -> tuple[bool, bool]:
    """(refused, suspect) for an id: empty, too long, or any control character."""
    refused = not value or len(value) > MAX_ID or any(c in CONTROL for c in value)
    return refused, value not in benign


def expected(
    method: Method,
    request: Message,
    key: str | None,
    benign: frozenset[str],
    live_session: str,
    replay: bool = False,
) -> Expected:
    """What the contract says about a request the server decoded as ``request``
    (``benign``: the real values; ``live_session``: the id of an open session;
    ``replay``: its idempotency-key was sent before)."""
    out = Expected()

    def judge(name: str, verdict: tuple[bool, bool]) -> None:
        refused, suspect = verdict
        if refused:
            out.refused.add(name)
        elif suspect:
            out.suspect.add(name)

    def an_id(name: str) -> None:
        judge(name, id_field(getattr(request, name), benign=benign))

    if method is OPEN:
        an_id("subject_container_id")
        an_id("agent_id")
        if not 1 <= request.session_type <= 4:
            out.refused.add("session_type")
    elif method in (CLOSE, REPORT, HEARTBEAT, GET, HISTORY, SESSION_AT):
        an_id("session_id")
    elif method in (GET_OPERATION, CANCEL_OPERATION):
        an_id("operation_id")
    elif method is LIST:
        an_id("subject_container_id")
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            out.refused.add("page_size")
        judge("page_token", text_field(request.page_token, limit=MAX_PAGE_TOKEN, benign=()))
        judge("filter", text_field(request.filter, limit=MAX_FILTER, benign=()))

    if method is CLOSE:
        judge(
            "fail_reason",
            # any reason may be refused when failed is false
            text_field(request.fail_reason, limit=MAX_FAIL_REASON, benign=("",)),
        )
    if method is REPORT:
        out.suspect.add("progress_entries")  # the domain may refuse more (overflow)
        # The domain checks the report's shape once it has the session: of a
        # session that does not exist, NOT_FOUND may come first; under an
        # idempotency-key used before, the stored answer may come instead.
        if (
            request.session_id == live_session
            and not replay
            and not report_shape_ok(request.progress_entries)
        ):
            out.refused.add("progress_entries")
    if method is SESSION_AT:
        point = request.WhichOneof("point")
        if point is None:
            out.refused.add("point")
            out.suspect |= {"as_of", "version"}
        elif point == "version":
            if request.version < 1:
                out.refused.add("version")
        elif not (
            TIMESTAMP_SECONDS[0] <= request.as_of.seconds <= TIMESTAMP_SECONDS[1]
            and NANOS[0] <= request.as_of.nanos <= NANOS[1]
        ):
            out.refused.add("as_of")
        else:
            out.suspect.add("as_of")  # e.g. before the session existed
    if method.writes and key is not None:
        judge("idempotency-key", (len(key) > MAX_IDEMPOTENCY_KEY, True))
    return out


def report_shape_ok(entries: Any) -> bool:
    if not 1 <= len(entries) <= 3:
        return False
    for entry in entries:
        if not 1 <= entry.object_type <= 3 or not 1 <= len(entry.change_info) <= 6:
            return False
        for change in entry.change_info:
            if not 1 <= change.change_type <= 6 or change.successful < 0 or change.failed < 0:
                return False
    return True


# --- strategies ---------------------------------------------------------------------

SPECIAL = (
    "",
    NUL,
    NUL * 3,
    "a\x00b",
    "\x00a",
    "a\x00",
    "\t",
    "a\nb",
    "\r\n",
    "\x1b[31mred",
    "\x7f",
    "\x01\x02",
    "\u0085",  # NEL, a C1 control
    "\u2028",
    "\u202eevil",  # right-to-left override
    "\ufeff",
    "\ufffd",
    "\U0001f600",
    "é",
    " ",
    "a b",
    "'; DROP TABLE events; --",
    "%",
    "_",
    "\\",
    '"',
    "*",
    "../..",
    "null",
    "ses",
)
AFFIX = st.sampled_from(["", NUL, "\x01", "\n", "\x7f", "é", " ", "x", "\U0001f600"])


def around(limit: int) -> st.SearchStrategy[str]:
    """Strings at the documented limit, one over and one under, some with a
    NUL or another character at a drawn position."""

    def make(length: int, fill: str, odd: str, at: int) -> str:
        text = fill * length
        if not odd:
            return text
        at %= length + 1
        return text[:at] + odd + text[at + 1 :]

    return st.builds(
        make,
        st.integers(max(limit - 1, 0), limit + 1),
        st.sampled_from(["x", "é", "\U0001f600", "0"]),
        st.sampled_from(["", "", NUL, "\x01", "é"]),
        st.integers(0, 10_000),
    )


def either(usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` half the time, so that whole requests often get past the
    checks to the domain. (Not ``one_of``: it flattens nested ``one_of``s
    into equally likely branches, and the hostile side has many.)"""
    return st.booleans().flatmap(lambda hostile_now: hostile if hostile_now else usual)


def texts(limit: int, *real: str, plain: Iterable[str] = ()) -> st.SearchStrategy[Text]:
    """Values for a string field: real ones (if any) half the time, and
    hostile ones: plain unknown ones, NUL and other controls, unicode, lengths around ``limit``,
    real values with text around them."""
    hostile: list[st.SearchStrategy[Any]] = [
        st.sampled_from(SPECIAL),
        st.text(max_size=8),
        st.builds(lambda t, at: t[:at] + NUL + t[at:], st.text(max_size=8), st.integers(0, 8)),
        st.text(st.characters(max_codepoint=0xA0), max_size=6),
        around(limit),
    ]
    plain = tuple(plain)
    if plain:
        hostile.append(st.sampled_from(plain))  # well-formed, but nothing has them
    if not real:
        return st.one_of(hostile)
    kinds = st.sampled_from(real)
    hostile.append(st.builds(Real, kinds, AFFIX, AFFIX))
    return either(st.builds(Real, kinds), st.one_of(hostile))


def ids(*real: str) -> st.SearchStrategy[Text]:
    return texts(MAX_ID, *real, plain=("agent-2", "container-2", "ses0000000000000000"))


INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 7, INT64_MAX, INT64_MIN, INT64_MAX - 1, 2**31, 2**32, -(2**31)]),
    st.integers(INT64_MIN, INT64_MAX),
)
ENUM = st.one_of(st.integers(0, 7), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]))
COUNT = st.one_of(st.integers(0, 100), INT64)


def changes() -> st.SearchStrategy[list[tuple[int, int, int]]]:
    good = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 100), st.integers(0, 100)),
                    min_size=1, max_size=6, unique_by=lambda c: c[0])
    bad = st.lists(st.tuples(ENUM, COUNT, COUNT), max_size=8)
    return st.one_of(good, good, bad)


def entries() -> st.SearchStrategy[list[tuple[int, list[tuple[int, int, int]]]]]:
    good = st.lists(st.tuples(st.integers(1, 3), changes()), min_size=1, max_size=3,
                    unique_by=lambda e: e[0])
    bad = st.lists(st.tuples(ENUM, changes()), max_size=5)
    return st.one_of(good, good, bad)


def timestamps() -> st.SearchStrategy[tuple[int, int]]:
    seconds = st.one_of(
        st.sampled_from([0, 1_700_000_000, 4_000_000_000, *TIMESTAMP_SECONDS,
                         TIMESTAMP_SECONDS[0] - 1, TIMESTAMP_SECONDS[1] + 1, INT64_MAX, INT64_MIN]),
        INT64,
    )
    nanos = st.one_of(st.sampled_from([0, 1, *NANOS, -1, 10**9, 2**31 - 1, -(2**31)]),
                      st.integers(-(2**31), 2**31 - 1))
    return st.tuples(seconds, nanos)


FILTER_FIELDS = ("status", "session_type", "sync_mode", "agent_id", "created_at", "closed_at",
                 "expires_at", "nope", "")
FILTER_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "IN", "in", "==", "")
FILTER_LITERALS = (
    "OPENED", "AD_SYNC", "DELTA", "NOPE", "agent-1",
    "2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
    "10000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00+25:00", "2026-01-01T24:00:00Z", "1e309", "9" * 40,
)


VALID_FILTERS = (
    "",
    "",
    'status = "OPENED"',
    'session_type IN ("AD_SYNC", "LDAP_SYNC")',
    'created_at >= "2020-01-01T00:00:00Z" AND agent_id != "x"',
    'closed_at < "2030-01-01T00:00:00+03:00"',
)


def filters() -> st.SearchStrategy[str]:
    def term(name: str, operator: str, literal: str, quoted: bool) -> str:
        if operator.lower() == "in":
            return f'{name} {operator} ("{literal}", "OPENED")'
        escaped = literal.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name} {operator} "{escaped}"' if quoted else f"{name} {operator} {literal}"

    literal = st.one_of(st.sampled_from(FILTER_LITERALS), texts(MAX_ID))
    one = st.builds(term, st.sampled_from(FILTER_FIELDS), st.sampled_from(FILTER_OPERATORS),
                    literal, st.booleans())
    return either(st.sampled_from(VALID_FILTERS), st.one_of(
        one,
        st.lists(one, min_size=2, max_size=4).map(" AND ".join),
        texts(MAX_FILTER),
        st.sampled_from(["(((", "AND AND", 'agent_id = "', "status IN ()", "status IN (" * 300]),
    ))


KEYS = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(["k1", "k1", "k2", "x" * MAX_IDEMPOTENCY_KEY, "x" * (MAX_IDEMPOTENCY_KEY + 1),
                     "' OR 1=1 --", "%00", "a b"]),
    # Metadata values go on the wire as HTTP/2 header values: printable ASCII
    # only (the client refuses others before sending).
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=140),
)


@dataclass(frozen=True)
class Draft:
    """A structured request: its fields (some ``Real``) and its idempotency-key."""

    fields: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True)
class Raw:
    """Bytes: given outright, or a draft's serialization mangled by ``how``."""

    how: str  # bytes, truncate, flip, append, prepend
    data: bytes = b""
    base: Draft | None = None
    at: int = 0
    mask: int = 0


def drafts(method: Method) -> st.SearchStrategy[Draft]:
    f = st.fixed_dictionaries
    if method is OPEN:
        fields = f({"subject_container_id": ids("container"), "agent_id": ids("agent"),
                    "session_type": either(st.integers(1, 4), ENUM)})
    elif method is CLOSE:
        fields = f({"session_id": ids("session"), "failed": st.booleans(),
                    "fail_reason": either(st.just(""), texts(MAX_FAIL_REASON, plain=["LDAP down"]))})
    elif method is REPORT:
        fields = f({"session_id": ids("session"), "progress_entries": entries()})
    elif method in (HEARTBEAT, GET, HISTORY):
        fields = f({"session_id": ids("session")})
    elif method in (GET_OPERATION, CANCEL_OPERATION):
        fields = f({"operation_id": ids("operation")})
    elif method is LIST:
        fields = f({
            "subject_container_id": ids("container"),
            "page_size": st.one_of(st.integers(0, 3), INT64),
            "page_token": either(st.just(""), texts(MAX_PAGE_TOKEN, "page_token")),
            "filter": filters(),
        })
    elif method is SESSION_AT:
        point = st.one_of(
            st.none(),
            st.tuples(st.just("version"), either(st.integers(1, 4), INT64)),
            st.tuples(st.just("as_of"), timestamps()),
        )
        fields = f({"session_id": ids("session"), "point": point})
    else:  # pragma: no cover
        raise AssertionError(method)
    return st.builds(Draft, fields, KEYS if method.writes else st.none())


def wire_tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


GARBAGE = (
    b"\xff\xff\xff",
    b"\x0a\x02\xff\xfe",  # field 1, not UTF-8
    b"\x0a\x05ab",  # field 1, length past the end
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1, a 4 GiB length
    b"\x08\x01",  # field 1 as a varint where a string is
    b"\x0d\x00\x00\x00\x00",  # field 1 as fixed32
    b"\x0f",  # wire type 7
    b"\x00",  # field 0
    b"\x80" * 11,  # a varint that never ends
    b"\x7b" * 150 + b"\x7c" * 150,  # unknown groups nested past the recursion limit
    b"\x7b" * 3 + b"\x7c" * 3,  # unknown groups, nested a little: decodes
    b"\xa2\x06\x03abc",  # unknown field 100: decodes
)


def raws(method: Method) -> st.SearchStrategy[Raw]:
    base = drafts(method)
    wrong = st.builds(
        lambda n, t, payload: wire_tag(n, t) + payload,
        st.integers(1, 5), st.integers(0, 7), st.binary(max_size=9),
    )
    return st.one_of(
        st.builds(Raw, st.just("bytes"), st.sampled_from(GARBAGE)),
        st.builds(Raw, st.just("bytes"), st.binary(max_size=40)),
        st.builds(Raw, st.just("truncate"), base=base, at=st.integers(0, 300)),
        st.builds(Raw, st.just("flip"), base=base, at=st.integers(0, 300), mask=st.integers(1, 255)),
        st.builds(Raw, st.just("append"), wrong, base=base),
        st.builds(Raw, st.just("prepend"), wrong, base=base),
    )


def requests(method: Method) -> st.SearchStrategy[Draft | Raw]:
    """Two structured requests to one of bytes. (Not ``one_of``: it flattens
    nested ``one_of``s into equally likely branches, and raws have six.)"""
    structured, raw = drafts(method), raws(method)
    return st.integers(0, 2).flatmap(lambda i: raw if i == 0 else structured)


# --- the prober: one running server, one channel ------------------------------------


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    body: bytes = b""
    details: str = ""
    violations: tuple[str, ...] | None = None  # BadRequest field names, if any detail


@dataclass(frozen=True)
class Snapshot:
    session: bytes  # GetSession's response bytes
    history: bytes  # StreamHistory's pages, concatenated
    head: int


class Prober:
    """Sends drafts to one server and checks every answer against the contract."""

    def __init__(self, running: Any):
        self.running = running
        self.channel: grpc.Channel = running.channel
        self.app = running.server.app
        self.calls = 0
        self.targets = 0
        self.real: dict[str, str] = {}
        self.keys_sent: set[str] = set()
        self._set_up()

    # the world

    def _set_up(self) -> None:
        """A live target session (reported and heartbeaten, so that writes
        reach the domain and the history has several events), a second one
        in the listing container, and a page token the server issued."""
        self.real["container"], self.real["agent"] = "container-1", "agent-1"
        _, first = self.open("container-1", session_type=1)
        self.open("container-1", session_type=4)
        self.real["operation"] = first
        self.new_target()
        ok = self.send(LIST, service_pb2.ListSessionsRequest(
            subject_container_id="container-1", page_size=1).SerializeToString())
        assert ok.code == Code.OK, ok
        self.real["page_token"] = service_pb2.ListSessionsResponse.FromString(ok.body).next_page_token
        assert self.real["page_token"]

    def open(self, container: str, session_type: int = 1) -> tuple[str, str]:
        request = service_pb2.OpenSessionRequest(
            subject_container_id=container, agent_id="agent-1", session_type=session_type
        )
        answer = self.send(OPEN, request.SerializeToString())
        assert answer.code == Code.OK, answer
        operation = operation_pb2.Operation.FromString(answer.body)
        opened = service_pb2.OpenSessionResponse()
        assert operation.response.Unpack(opened)
        assert opened.result == service_pb2.SUCCESS
        return opened.opened_session.session_id, operation.id

    def new_target(self) -> None:
        self.targets += 1
        session_id, _ = self.open(f"target-{self.targets}")
        self.real["session"] = session_id
        entry = session_pb2.ProgressEntry(
            object_type=1, change_info=[session_pb2.ChangeInfo(change_type=1, successful=3)]
        )
        for method, request in (
            (REPORT, service_pb2.ReportSessionProgressRequest(session_id=session_id,
                                                              progress_entries=[entry])),
            (HEARTBEAT, service_pb2.HeartbeatRequest(session_id=session_id)),
        ):
            assert self.send(method, request.SerializeToString()).code == Code.OK
        self.snapshot = self.take_snapshot()

    @property
    def benign(self) -> frozenset[str]:
        return frozenset(self.real.values())

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def take_snapshot(self) -> Snapshot:
        session_id = self.real["session"]
        got = self.send(GET, service_pb2.GetSessionRequest(session_id=session_id).SerializeToString())
        assert got.code == Code.OK, f"the target session {session_id} cannot be read: {got}"
        history = self.send(
            HISTORY, audit_pb2.StreamHistoryRequest(session_id=session_id).SerializeToString()
        )
        assert history.code == Code.OK, f"the target's history cannot be read: {history}"
        return Snapshot(got.body, history.body, self.head())

    # sending

    def send(self, method: Method, data: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> Answer:
        self.calls += 1
        try:
            if method.streaming:
                pages = self.channel.unary_stream(method.path)(
                    data, metadata=metadata, timeout=CALL_TIMEOUT
                )
                return Answer(Code.OK, b"".join(pages))
            body = self.channel.unary_unary(method.path)(data, metadata=metadata, timeout=CALL_TIMEOUT)
            return Answer(Code.OK, body)
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            violations = None
            for detail in status.details if status is not None else ():
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    violations = (violations or ()) + tuple(
                        v.field for v in bad_request.field_violations
                    )
            return Answer(error.code(), b"", error.details() or "", violations)  # type: ignore[attr-defined]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Real):
            return value.before + self.real[value.kind] + value.after
        return value

    def build(self, method: Method, draft: Draft) -> Message:
        values = {name: self.resolve(v) for name, v in draft.fields.items()}
        if method is REPORT:
            values["progress_entries"] = [
                session_pb2.ProgressEntry(
                    object_type=object_type,
                    change_info=[
                        session_pb2.ChangeInfo(change_type=t, successful=s, failed=f)
                        for t, s, f in change_info
                    ],
                )
                for object_type, change_info in values["progress_entries"]
            ]
        if method is SESSION_AT:
            point = values.pop("point")
            if point is not None and point[0] == "version":
                values["version"] = point[1]
            elif point is not None:
                request = method.request_type(**values)
                request.as_of.seconds, request.as_of.nanos = point[1]
                return request
        return method.request_type(**values)

    def bytes_of(self, method: Method, drawn: Draft | Raw) -> tuple[bytes, str | None]:
        if isinstance(drawn, Draft):
            return self.build(method, drawn).SerializeToString(), drawn.key
        if drawn.how == "bytes":
            return drawn.data, None
        assert drawn.base is not None
        data = self.build(method, drawn.base).SerializeToString()
        key = drawn.base.key
        if drawn.how == "truncate":
            return data[: drawn.at % (len(data) + 1)], key
        if drawn.how == "flip":
            if not data:
                return bytes([drawn.mask]), key
            at = drawn.at % len(data)
            return data[:at] + bytes([data[at] ^ drawn.mask]) + data[at + 1 :], key
        if drawn.how == "append":
            return data + drawn.data, key
        assert drawn.how == "prepend"
        return drawn.data + data, key

    # checking

    def check(self, method: Method, drawn: Draft | Raw) -> None:
        data, key = self.bytes_of(method, drawn)
        try:
            decoded: Message | None = method.request_type.FromString(data)
        except DecodeError:
            decoded = None
        want = (
            Expected(refused={"request"})
            if decoded is None
            else expected(
                method, decoded, key, self.benign, self.real["session"], key in self.keys_sent
            )
        )
        if key is not None:
            self.keys_sent.add(key)
        metadata = (("idempotency-key", key),) if key is not None else ()
        head = self.head()
        answer = self.send(method, data, metadata)
        what = describe(method, data, decoded, key, answer)
        try:
            self._check(method, decoded, want, head, answer, what)
        finally:
            if method.writes:
                self._resync()

    def _check(
        self,
        method: Method,
        decoded: Message | None,
        want: Expected,
        head: int,
        answer: Answer,
        what: str,
    ) -> None:
        # What was stored first: a write refused in any way (UNKNOWN too)
        # must have stored nothing, and a read never stores.
        if not method.writes:
            assert self.head() == head, f"a read moved the log head: {what}"
        elif answer.code != Code.OK:
            after = self.take_snapshot()
            assert after.head == head, f"a refused write moved the log head: {what}"
            assert after == self.snapshot, f"a refused write changed the target session: {what}"

        assert answer.code in ALLOWED, f"answered {answer.code.name}: {what}"
        if want.refused:
            assert answer.code == Code.INVALID_ARGUMENT, (
                f"must refuse {sorted(want.refused)} with INVALID_ARGUMENT: {what}"
            )
        if answer.code == Code.INVALID_ARGUMENT:
            assert answer.violations, f"INVALID_ARGUMENT without a BadRequest detail: {what}"
            named = [v for v in answer.violations if v]
            assert named, f"no field violation names a field: {what}"
            for violation in named:
                assert want.names(violation), (
                    f"names {violation!r}, expected one of "
                    f"{sorted(want.refused | want.suspect)}: {what}"
                )

        if decoded is None or not method.writes:
            # The connection (and the server) still answer a good request.
            ok = self.send(GET, service_pb2.GetSessionRequest(
                session_id=self.real["session"]).SerializeToString())
            assert ok.code == Code.OK and ok.body == self.snapshot.session, (
                f"the next good request got {ok.code.name} {ok.details!r}: {what}"
            )

    def _resync(self) -> None:
        """After a write: the target as it is now is what the next write is
        compared with (also after a failed check, so that one bug is not
        reported again as another); a target that was closed is replaced."""
        got = self.send(GET, service_pb2.GetSessionRequest(
            session_id=self.real["session"]).SerializeToString())
        if got.code != Code.OK:
            return  # the failure at hand says why
        shown = service_pb2.GetSessionResponse.FromString(got.body).session
        if shown.status in (session_pb2.OPENED, session_pb2.PENDING):
            self.snapshot = self.take_snapshot()
        else:
            self.new_target()  # so that later writes reach a live session again


def describe(
    method: Method, data: bytes, decoded: Message | None, key: str | None, answer: Answer
) -> str:
    if decoded is None:
        sent = f"undecodable bytes {data[:80]!r}{'...' if len(data) > 80 else ''}"
    else:
        shown = text_format.MessageToString(decoded, as_one_line=True)
        sent = f"{{{shown[:400]}{'...' if len(shown) > 400 else ''}}}"
    if key is not None:
        sent += f" idempotency-key={key[:40]!r}"
    return (
        f"{method} {sent} -> {answer.code.name} {answer.details[:200]!r}"
        f" violations={answer.violations}"
    )


def wait_for_projector(running: Any, timeout: float, wait_until: Callable[..., bool]) -> None:
    """The projector reaches the log head: the lag returns to 0."""
    head = running.server.app.recorder.max_notification_id() or 0
    projector = running.server.projector
    assert wait_until(lambda: projector.position >= head, timeout, 0.01), (
        f"projector stuck at {projector.position}, head {head}; last error: {projector.error!r}"
    )
