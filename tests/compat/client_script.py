"""Drive a running sessions server with the *official* Yandex Cloud client stubs.

Run this with the Python of a separate virtualenv that has the PyPI package
``yandexcloud`` installed (see README.md beside this file). It imports nothing
from our own ``sessions`` package: everything it knows about the wire comes
from the public SDK, so passing proves that an unmodified public client can
talk to our server.

    python client_script.py --target 127.0.0.1:50051
    python client_script.py --describe      # print the official descriptors

On success it prints one JSON line with ``"ok": true`` and exits 0. On any
failed check or unexpected gRPC error it prints one JSON line with
``"ok": false`` and the reason (also on stderr) and exits 1. Exit 2 means bad
usage, exit 3 means the official stubs could not be imported.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import uuid

try:
    import grpc
    from google.protobuf import any_pb2, empty_pb2
    from google.protobuf.descriptor import FieldDescriptor
    from yandex.cloud.operation import (
        operation_pb2,
        operation_service_pb2,
        operation_service_pb2_grpc,
    )
    from yandex.cloud.organizationmanager.v1.idp import (
        synchronization_session_service_pb2 as idp,
    )
    from yandex.cloud.organizationmanager.v1.idp import (
        synchronization_session_service_pb2_grpc as idp_grpc,
    )
    from yandex.cloud.organizationmanager.v1.idp import (
        synchronization_settings_pb2 as idp_settings,
    )
except ImportError as exc:  # pragma: no cover - exercised only in a broken venv
    print(
        json.dumps({"ok": False, "error": f"official stubs not importable: {exc!r}", "python": sys.executable}),
        flush=True,
    )
    print(f"client_script: cannot import the official yandexcloud stubs: {exc!r}", file=sys.stderr)
    sys.exit(3)

TYPE_URL_PREFIX = "type.googleapis.com/"
AGENT_ID = "agent-1"


class CompatFailure(Exception):
    """A check against the wire contract did not hold."""


def check(condition: bool, message: str) -> None:
    # Not `assert`: this must hold under `python -O` too.
    if not condition:
        raise CompatFailure(message)


def package_versions() -> dict:
    from importlib import metadata

    versions = {}
    for name in ("yandexcloud", "protobuf", "grpcio", "googleapis-common-protos"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# --------------------------------------------------------------------------- helpers


class Client:
    """The official stubs over one channel, with the call conventions of the public API."""

    def __init__(self, channel: grpc.Channel, timeout: float, token: str | None):
        self.sessions = idp_grpc.SynchronizationSessionServiceStub(channel)
        self.operations = operation_service_pb2_grpc.OperationServiceStub(channel)
        self.timeout = timeout
        self.token = token
        self.calls: list[str] = []

    def metadata(self, idempotency_key: str | None = None) -> list[tuple[str, str]]:
        md = []
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        if idempotency_key:
            md.append(("idempotency-key", idempotency_key))
        return md

    def call(self, name: str, method, request, idempotency_key: str | None = None):
        self.calls.append(name)
        return method(request, timeout=self.timeout, metadata=self.metadata(idempotency_key))

    def wait_operation(self, op: operation_pb2.Operation, what: str, deadline_s: float = 30.0):
        """Poll OperationService.Get until done, as the SDK's operation waiter does."""
        deadline = time.monotonic() + deadline_s
        while not op.done:
            check(time.monotonic() < deadline, f"{what}: operation {op.id} not done after {deadline_s}s")
            time.sleep(0.1)
            op = self.call(
                "OperationService.Get",
                self.operations.Get,
                operation_service_pb2.GetOperationRequest(operation_id=op.id),
            )
        check(
            not op.HasField("error"),
            f"{what}: operation {op.id} failed: code={op.error.code} message={op.error.message!r}",
        )
        check(op.WhichOneof("result") == "response", f"{what}: done operation {op.id} has no response")
        return op


def unpack(any_msg: any_pb2.Any, message_cls, what: str):
    expected_url = TYPE_URL_PREFIX + message_cls.DESCRIPTOR.full_name
    check(any_msg.type_url == expected_url, f"{what}: type_url {any_msg.type_url!r}, expected {expected_url!r}")
    out = message_cls()
    check(any_msg.Unpack(out), f"{what}: Any does not unpack into {message_cls.DESCRIPTOR.full_name}")
    return out


def check_operation_envelope(op, metadata_cls, session_id: str | None, what: str):
    check(bool(op.id), f"{what}: operation has an empty id")
    check(len(op.id) <= 50, f"{what}: operation id {op.id!r} is longer than 50 characters")
    check(op.HasField("created_at"), f"{what}: operation.created_at not set")
    check(op.HasField("metadata"), f"{what}: operation.metadata not set")
    meta = unpack(op.metadata, metadata_cls, f"{what} metadata")
    if session_id is not None:
        check(meta.session_id == session_id, f"{what}: metadata.session_id {meta.session_id!r} != {session_id!r}")
    return meta


def progress_as_dict(session) -> list:
    """Progress entries as plain data, order preserved, for comparisons and messages."""
    return [
        (
            idp.RelatedObjectType.Name(entry.object_type),
            [(idp.ChangeType.Name(ci.change_type), ci.successful, ci.failed) for ci in entry.change_info],
        )
        for entry in session.progress_entries
    ]


def expect_status(func, code: grpc.StatusCode, what: str) -> None:
    try:
        func()
    except grpc.RpcError as err:
        check(err.code() == code, f"{what}: got {err.code().name} ({err.details()!r}), expected {code.name}")
        return
    raise CompatFailure(f"{what}: call succeeded, expected {code.name}")


# --------------------------------------------------------------------------- the scenario


def run_scenario(client: Client, container_id: str) -> dict:
    S = idp
    summary: dict = {"container": container_id}

    # ---- OpenSession
    open_req = S.OpenSessionRequest(
        subject_container_id=container_id,
        agent_id=AGENT_ID,
        session_type=idp_settings.AD_SYNC,
    )
    open_op = client.call("OpenSession", client.sessions.OpenSession, open_req)
    open_op = client.wait_operation(open_op, "OpenSession")
    opened = unpack(open_op.response, S.OpenSessionResponse, "OpenSession response")
    check(
        opened.result == S.SUCCESS,
        f"OpenSession: result {S.OpenSessionResult.Name(opened.result)}, expected SUCCESS",
    )
    check(
        opened.WhichOneof("session_info") == "opened_session",
        f"OpenSession: session_info is {opened.WhichOneof('session_info')!r}, expected 'opened_session'",
    )
    session = opened.opened_session
    session_id = session.session_id
    check(0 < len(session_id) <= 50, f"OpenSession: session_id {session_id!r} must be 1..50 characters")
    check_operation_envelope(open_op, S.OpenSessionMetadata, session_id, "OpenSession")
    check(session.agent_id == AGENT_ID, f"OpenSession: agent_id {session.agent_id!r}, expected {AGENT_ID!r}")
    check(
        session.session_type == idp_settings.AD_SYNC,
        f"OpenSession: session_type {idp_settings.SessionType.Name(session.session_type)}, expected AD_SYNC",
    )
    check(session.status == S.OPENED, f"OpenSession: status {S.SessionStatus.Name(session.status)}, expected OPENED")
    # A brand-new container has no completed FULL_SYNC yet, so the first session must be one.
    check(
        session.sync_mode == S.FULL_SYNC,
        f"OpenSession: sync_mode {S.SyncMode.Name(session.sync_mode)}, expected FULL_SYNC for a new container",
    )
    check(session.HasField("created_at"), "OpenSession: created_at not set")
    check(session.HasField("expires_at"), "OpenSession: expires_at not set")
    check(
        session.expires_at.ToNanoseconds() > session.created_at.ToNanoseconds(),
        "OpenSession: expires_at is not after created_at",
    )
    check(not session.HasField("closed_at"), "OpenSession: closed_at set on an open session")
    summary.update(session_id=session_id, open_operation_id=open_op.id)

    # ---- ReportSessionProgress, with an idempotency key, then the same call again
    report_req = S.ReportSessionProgressRequest(
        session_id=session_id,
        progress_entries=[
            S.ProgressEntry(
                object_type=S.USER,
                change_info=[S.ChangeInfo(change_type=S.CREATE, successful=5, failed=1)],
            ),
            S.ProgressEntry(
                object_type=S.GROUP,
                change_info=[S.ChangeInfo(change_type=S.UPDATE, successful=2)],
            ),
        ],
    )
    report_key = f"compat-report-{uuid.uuid4()}"
    report_op = client.call(
        "ReportSessionProgress", client.sessions.ReportSessionProgress, report_req, idempotency_key=report_key
    )
    report_op = client.wait_operation(report_op, "ReportSessionProgress")
    check_operation_envelope(report_op, S.ReportSessionProgressMetadata, session_id, "ReportSessionProgress")
    reported = unpack(report_op.response, S.SynchronizationSession, "ReportSessionProgress response")
    expected_progress = [("USER", [("CREATE", 5, 1)]), ("GROUP", [("UPDATE", 2, 0)])]
    check(
        progress_as_dict(reported) == expected_progress,
        f"ReportSessionProgress: progress {progress_as_dict(reported)}, expected {expected_progress}",
    )

    retry_op = client.call(
        "ReportSessionProgress(retry)",
        client.sessions.ReportSessionProgress,
        report_req,
        idempotency_key=report_key,
    )
    retry_op = client.wait_operation(retry_op, "ReportSessionProgress retry")
    check(
        retry_op.id == report_op.id,
        f"ReportSessionProgress retry with the same idempotency-key: operation id {retry_op.id!r}, "
        f"expected the first call's {report_op.id!r}",
    )
    retried = unpack(retry_op.response, S.SynchronizationSession, "ReportSessionProgress retry response")
    check(
        retried == reported,
        "ReportSessionProgress retry: response differs from the first call's answer "
        f"(progress {progress_as_dict(retried)} vs {progress_as_dict(reported)})",
    )
    summary["report_operation_id"] = report_op.id

    # ---- Heartbeat
    hb_op = client.call("Heartbeat", client.sessions.Heartbeat, S.HeartbeatRequest(session_id=session_id))
    hb_op = client.wait_operation(hb_op, "Heartbeat")
    check_operation_envelope(hb_op, S.HeartbeatMetadata, session_id, "Heartbeat")
    unpack(hb_op.response, empty_pb2.Empty, "Heartbeat response")

    # ---- CloseSession(failed=false)
    close_op = client.call(
        "CloseSession", client.sessions.CloseSession, S.CloseSessionRequest(session_id=session_id, failed=False)
    )
    close_op = client.wait_operation(close_op, "CloseSession")
    check_operation_envelope(close_op, S.CloseSessionMetadata, session_id, "CloseSession")
    closed = unpack(close_op.response, S.SynchronizationSession, "CloseSession response")
    check(
        closed.status == S.COMPLETED,
        f"CloseSession: status {S.SessionStatus.Name(closed.status)}, expected COMPLETED",
    )
    op_ids = [open_op.id, report_op.id, hb_op.id, close_op.id]
    check(len(set(op_ids)) == len(op_ids), f"every mutating call needs its own operation id, got {op_ids}")

    # ---- GetSession
    got = client.call("GetSession", client.sessions.GetSession, S.GetSessionRequest(session_id=session_id)).session
    check(got.session_id == session_id, f"GetSession: session_id {got.session_id!r}, expected {session_id!r}")
    check(got.status == S.COMPLETED, f"GetSession: status {S.SessionStatus.Name(got.status)}, expected COMPLETED")
    check(
        progress_as_dict(got) == expected_progress,
        f"GetSession: progress {progress_as_dict(got)}, expected {expected_progress} "
        "(a doubled count means the keyed retry was applied twice)",
    )
    check(got.HasField("closed_at"), "GetSession: closed_at not set on a COMPLETED session")
    check(
        got.closed_at.ToNanoseconds() >= got.created_at.ToNanoseconds(),
        "GetSession: closed_at is before created_at",
    )
    check(got.fail_reason == "", f"GetSession: fail_reason {got.fail_reason!r} on a successful close")
    check(got.agent_id == AGENT_ID, f"GetSession: agent_id {got.agent_id!r}")
    check(got.session_type == idp_settings.AD_SYNC, "GetSession: session_type is not AD_SYNC")
    check(got.created_at == session.created_at, "GetSession: created_at differs from the one OpenSession returned")
    check(
        got == closed,
        "GetSession right after CloseSession must equal the session CloseSession returned, field for field\n"
        f"  close: {closed}\n  get:   {got}",
    )

    # ---- ListSessions for the container
    listed = client.call(
        "ListSessions",
        client.sessions.ListSessions,
        S.ListSessionsRequest(subject_container_id=container_id, page_size=100),
    )
    listed_ids = [s.session_id for s in listed.sessions]
    check(session_id in listed_ids, f"ListSessions: {session_id!r} not among {listed_ids}")
    check(len(listed_ids) == 1, f"ListSessions: a fresh container should hold exactly one session, got {listed_ids}")
    check(listed.sessions[0] == got, "ListSessions: the listed session differs from GetSession's")

    # ---- OperationService.Get of the open operation, after the fact
    fetched = client.call(
        "OperationService.Get",
        client.operations.Get,
        operation_service_pb2.GetOperationRequest(operation_id=open_op.id),
    )
    check(fetched.id == open_op.id, f"OperationService.Get: id {fetched.id!r}, expected {open_op.id!r}")
    check(fetched.done, "OperationService.Get: the open operation is not done")
    check(fetched.WhichOneof("result") == "response", "OperationService.Get: the open operation has no response")
    refetched = unpack(fetched.response, S.OpenSessionResponse, "OperationService.Get response")
    check(
        refetched == opened,
        f"OperationService.Get: response differs from OpenSession's\n  open: {opened}\n  get:  {refetched}",
    )
    check(
        unpack(fetched.metadata, S.OpenSessionMetadata, "OperationService.Get metadata").session_id == session_id,
        "OperationService.Get: metadata.session_id differs",
    )

    # ---- validation and error mapping
    expect_status(
        lambda: client.call(
            "GetSession(51 chars)", client.sessions.GetSession, S.GetSessionRequest(session_id="x" * 51)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetSession with a 51-character session_id",
    )
    expect_status(
        lambda: client.call(
            "GetSession(unknown)",
            client.sessions.GetSession,
            S.GetSessionRequest(session_id="unknown-" + secrets.token_hex(8)),
        ),
        grpc.StatusCode.NOT_FOUND,
        "GetSession with an unknown session_id",
    )

    summary["calls"] = list(client.calls)
    return summary


# --------------------------------------------------------------------------- describe


def describe() -> dict:
    """The official descriptors, as names and numbers, for comparing with docs/wire.md."""

    SCALAR_TYPE_NAMES = {
        getattr(FieldDescriptor, name): name[len("TYPE_") :].lower()
        for name in dir(FieldDescriptor)
        if name.startswith("TYPE_") and name != "TYPE_MESSAGE" and name != "TYPE_ENUM"
    }

    def is_repeated(field):
        if hasattr(type(field), "is_repeated"):  # protobuf >= 6: `label` is deprecated
            return field.is_repeated
        return field.label == FieldDescriptor.LABEL_REPEATED

    def enum_info(enum):
        return {v.name: v.number for v in enum.values}

    def message_info(msg):
        fields = {}
        for f in msg.fields:
            if f.message_type:
                kind = f.message_type.full_name
            elif f.enum_type:
                kind = f.enum_type.full_name
            else:
                kind = SCALAR_TYPE_NAMES.get(f.type, str(f.type))
            fields[f.name] = {
                "number": f.number,
                "type": kind,
                "repeated": is_repeated(f),
                "oneof": f.containing_oneof.name if f.containing_oneof else None,
            }
        return fields

    out: dict = {"versions": package_versions(), "files": {}}
    for module in (idp, idp_settings, operation_pb2, operation_service_pb2):
        fd = module.DESCRIPTOR
        out["files"][fd.name] = {
            "package": fd.package,
            "enums": {e.full_name: enum_info(e) for e in fd.enum_types_by_name.values()},
            "messages": {m.full_name: message_info(m) for m in fd.message_types_by_name.values()},
            "services": {
                s.full_name: {
                    m.name: {
                        "path": f"/{s.full_name}/{m.name}",
                        "input": m.input_type.full_name,
                        "output": m.output_type.full_name,
                    }
                    for m in s.methods
                }
                for s in fd.services_by_name.values()
            },
        }
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running sessions server")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each RPC in seconds")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to wait for the channel")
    parser.add_argument("--token", help="send 'authorization: Bearer TOKEN' on every call")
    parser.add_argument("--describe", action="store_true", help="print the official descriptors as JSON and exit")
    args = parser.parse_args(argv)

    if args.describe:
        print(json.dumps(describe(), indent=2, sort_keys=True))
        return 0
    if not args.target:
        parser.error("--target HOST:PORT is required")

    container_id = f"cmp-container-{secrets.token_hex(6)}"
    result: dict = {"target": args.target, "versions": package_versions()}
    calls: list[str] = []
    try:
        with grpc.insecure_channel(args.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
            except grpc.FutureTimeoutError:
                raise CompatFailure(f"could not connect to {args.target} within {args.connect_timeout}s") from None
            client = Client(channel, timeout=args.timeout, token=args.token)
            calls = client.calls
            result.update(run_scenario(client, container_id))
        check("sessions" not in sys.modules, "the client imported our own `sessions` package; it must not")
    except CompatFailure as exc:
        last = calls[-1] if calls else None
        result.update(ok=False, error=str(exc), last_call=last, container=container_id)
        print(json.dumps(result, sort_keys=True), flush=True)
        print(f"client_script: COMPAT FAILURE (last call {last}): {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        last = calls[-1] if calls else None
        code = err.code().name if hasattr(err, "code") and err.code() else "UNKNOWN"
        details = err.details() if hasattr(err, "details") else str(err)
        result.update(ok=False, error=f"{last} failed: {code}: {details}", last_call=last, container=container_id)
        print(json.dumps(result, sort_keys=True), flush=True)
        print(f"client_script: unexpected gRPC error from {last}: {code}: {details}", file=sys.stderr)
        return 1
    result["ok"] = True
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
