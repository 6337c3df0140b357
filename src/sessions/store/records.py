"""Raw stored events of one stream, with their positions in the log.

The library's ``select_events`` leaves out the notification id; audits need
it, so this reads the same table through the recorder's own datastore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier


class StoredRecord(NamedTuple):  # a tuple: long streams build many
    stream: str
    version: int
    position: int
    topic: str
    state: bytes


def stream_records(recorder: Any, stream_id: str) -> list[StoredRecord]:
    table = recorder.events_table_name
    if isinstance(recorder, PostgresApplicationRecorder):
        query = SQL(
            "SELECT notification_id, originator_version, topic, state FROM {table} "
            "WHERE originator_id = %s ORDER BY originator_version"
        ).format(table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, (stream_id,), prepare=True)
            return [
                StoredRecord(
                    stream_id, r["originator_version"], r["notification_id"], r["topic"], bytes(r["state"])
                )
                for r in curs.fetchall()
            ]
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(
            f"SELECT rowid, originator_version, topic, state FROM {table} "
            "WHERE originator_id = ? ORDER BY originator_version",
            (stream_id,),
        )
        return [StoredRecord(stream_id, r[1], r[0], r[2], bytes(r[3])) for r in c.fetchall()]


def select_notifications_except(
    recorder: Any, start: int, limit: int, stop: int, topics: Sequence[str]
) -> list[Notification]:
    """Like the recorder's select_notifications (after ``start``, up to
    ``stop``), but leaving out ``topics``: a reader that knows what it can
    skip still sees events of topics it does not know."""
    table = recorder.events_table_name
    if isinstance(recorder, PostgresApplicationRecorder):
        query = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {table} "
            "WHERE notification_id > %s AND notification_id <= %s AND NOT (topic = ANY(%s)) "
            "ORDER BY notification_id LIMIT %s"
        ).format(table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, (start, stop, list(topics), limit), prepare=True)
            return [
                Notification(
                    id=r["notification_id"],
                    originator_id=r["originator_id"],
                    originator_version=r["originator_version"],
                    topic=r["topic"],
                    state=bytes(r["state"]),
                )
                for r in curs.fetchall()
            ]
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
            f"WHERE rowid > ? AND rowid <= ? AND topic NOT IN ({','.join('?' * len(topics))}) "
            "ORDER BY rowid LIMIT ?",
            (start, stop, *topics, limit),
        )
        return [
            Notification(id=r[0], originator_id=r[1], originator_version=r[2], topic=r[3], state=bytes(r[4]))
            for r in c.fetchall()
        ]
