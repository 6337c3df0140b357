"""Requests and readings that many end-to-end tests make."""

from __future__ import annotations

from sessions.api.protos import service_pb2, session_pb2


def report_request(session_id: str, created: int = 1) -> service_pb2.ReportSessionProgressRequest:
    """A report of ``created`` users created."""
    return service_pb2.ReportSessionProgressRequest(
        session_id=session_id,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=session_pb2.USER,
                change_info=[session_pb2.ChangeInfo(change_type=session_pb2.CREATE, successful=created)],
            )
        ],
    )


def created_users(session: session_pb2.SynchronizationSession) -> int:
    return sum(c.successful for e in session.progress_entries for c in e.change_info)
