"""Folding session events into snapshot rows.

The fold is the aggregate's own: each event's ``mutate`` runs the same method
body that ran when the event happened, so the read model cannot drift from
the write side. A row stores the aggregate's state at its version; the next
batch resumes from it instead of replaying the stream.

Decoding events and encoding rows are most of a fold's cost outside the
aggregate, so both take a shorter way to the library's own result when the
store's JSON is plain (no cipher, no compressor): see ``decode``,
and ``_stored_state``. Each gives the same values or bytes as the library's
way, as tests/projection/test_fold_decoding.py and test_fold_rows.py check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, cast

from eventsourcing.persistence import DatetimeAsISO, Mapper, Notification, StoredEvent
from eventsourcing.utils import resolve_topic

from sessions.api.convert import micros, session_bytes
from sessions.domain.base import SnapshotOfState
from sessions.domain.enums import ChangeType, RelatedObjectType
from sessions.domain.progress import ChangeCount, ProgressEntry, new_count, new_entry
from sessions.domain.schedule import SyncSchedule
from sessions.domain.session import Session
from sessions.projection.rows import SessionRow
from sessions.store.operations import OperationRecord
from sessions.store.transcodings import EnumAsName, ProgressEntryAsDict


def session_event_topics() -> frozenset[str]:
    return frozenset(
        getattr(value, "TOPIC")  # noqa: B009 - checked just below
        for value in vars(Session).values()
        if isinstance(value, type)
        and issubclass(value, Session.Event)
        and value not in (Session.Event, Session.Created)
    )


SESSION_TOPICS = session_event_topics()


def _topics_of(aggregate: Any) -> set[str]:
    topics = {getattr(value, "TOPIC", None) for value in vars(aggregate).values() if isinstance(value, type)}
    return {t for t in topics if t is not None and t != aggregate.TOPIC}


# Events the fold knows it can pass by: the other streams' own topics. Any
# other topic is read, so that an event the fold does not know is parked.
SKIPPED_TOPICS = frozenset(_topics_of(SyncSchedule) | _topics_of(OperationRecord))


class SessionFold:
    def __init__(self, mapper: Mapper[Any]):
        self.mapper = mapper
        # The library's JSON decoder calls back into Python for every object;
        # parsing plainly and converting only the tagged values is the same
        # result at a fraction of the cost (the store has no cipher or
        # compressor, checked here). Encoding likewise: the JSON text is
        # written in one pass, tagged values included, without call-backs.
        transcoder = mapper.transcoder
        plain = mapper.cipher is None and mapper.compressor is None
        names = getattr(transcoder, "names", None) if plain else None
        types = getattr(transcoder, "types", None) if plain else None
        self._decoders: dict[str, Callable[[Any], Any]] | None = None
        self._writers: dict[type, Callable[[Any], str]] | None = None
        if names is not None and types is not None:
            self._decoders = {name: _fast_decode(t) for name, t in names.items()}
            self._writers = _writers(types)

    def decode(self, notification: Notification) -> Any:
        """The domain event of a stored session event (as the mapper gives)."""
        typed = self._decoders
        if typed is None:
            return self.mapper.to_domain_event(notification)
        state = _parse(notification.state)
        for key, value in state.items():
            kind = type(value)
            if kind is dict:
                if "_type_" in value:
                    state[key] = typed[value["_type_"]](value["_data_"])
            elif kind is list:
                state[key] = [
                    typed[v["_type_"]](v["_data_"]) if type(v) is dict and "_type_" in v else v
                    for v in value
                ]
        return _event(notification.topic, notification.originator_id, notification.originator_version, state)

    @property
    def plain(self) -> bool:
        """Whether the store's JSON is read directly (no cipher, no compressor)."""
        return self._decoders is not None

    def decode_with_data(self, stream: str, version: int, topic: str, state: bytes) -> tuple[Any, dict[str, Any]]:
        """The domain event of a stored event (``plain`` stores only), and its
        values as stored, the store's type tags taken off: the canonical form
        the chain hashes (domain/chain.py)."""
        typed = self._decoders
        assert typed is not None, "decode_with_data reads plain stores only"
        values = _parse(state)
        data: dict[str, Any] = {}
        for key, value in values.items():
            kind = type(value)
            if kind is dict and "_type_" in value:
                data[key] = value["_data_"]
                values[key] = typed[value["_type_"]](value["_data_"])
            elif kind is list:
                data[key] = [v["_data_"] if type(v) is dict and "_type_" in v else v for v in value]
                values[key] = [
                    typed[v["_type_"]](v["_data_"]) if type(v) is dict and "_type_" in v else v
                    for v in value
                ]
            else:
                data[key] = value
        return _event(topic, stream, version, values), data

    def resume(self, session_id: str, version: int, state: bytes) -> Session:
        stored = StoredEvent(session_id, version, SnapshotOfState.TOPIC, state)
        event: Any = self.mapper.to_domain_event(stored)
        return cast(Session, event.mutate(None))

    def apply(
        self, sessions: dict[str, Session], notifications: Iterable[Notification]
    ) -> tuple[set[str], list[tuple[Notification, str]]]:
        """Apply the session events among ``notifications`` to ``sessions``
        (in place). Return the ids that changed, and the events that could
        not be applied with their errors (poison events, to be parked); once
        one of a stream's events fails, the stream's later events wait too.
        Events a row already holds (version not newer) are skipped."""
        changed: set[str] = set()
        failed: list[tuple[Notification, str]] = []
        blocked: set[str] = set()
        skipped = SKIPPED_TOPICS
        decode = self.decode
        for notification in notifications:
            if notification.topic in skipped:
                continue
            stream = str(notification.originator_id)
            if stream in blocked:
                failed.append((notification, "waits for an earlier parked event of its stream"))
                continue
            try:
                event = decode(notification)
                current = sessions.get(stream)
                if current is not None and event.originator_version <= current.version:
                    continue
                sessions[stream] = event.mutate(current)
            except Exception as e:  # noqa: BLE001 - any failure parks the event
                blocked.add(stream)
                failed.append((notification, f"{type(e).__name__}: {e}"))
                continue
            changed.add(stream)
        return changed, failed

    def row(self, session: Session) -> SessionRow:
        return SessionRow(
            session_id=session.id,
            subject_container_id=session.subject_container_id,
            session_type=session.session_type.value,
            status=session.status.value,
            sync_mode=session.sync_mode.value,
            agent_id=session.agent_id,
            created_at=micros(session.created_at),
            expires_at=micros(session.expires_at),
            closed_at=micros(session.closed_at) if session.closed_at else None,
            last_seen_at=micros(session.last_seen_at),
            version=session.version,
            state=self._stored_state(SnapshotOfState.take(session)),
            session=session_bytes(session),
        )

    def _stored_state(self, event: Any) -> bytes:
        """``mapper.to_stored_event(event).state``, the same bytes."""
        writers = self._writers
        if writers is None:
            return self.mapper.to_stored_event(event).state
        # As Mapper.to_stored_event does it.
        state = dict(vars(event))
        del state["originator_id"], state["originator_version"]
        class_version = getattr(type(event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        try:
            return _json(state, writers).encode("utf8")
        except Exception:  # noqa: BLE001 - anything unusual: the library's way (and error)
            return self.mapper.transcoder.encode(state)


@cache
def _event_class(topic: str) -> type:
    return resolve_topic(topic)  # type: ignore[no-any-return]


def _event(topic: str, stream: Any, version: int, state: dict[str, Any]) -> Any:
    """The event object the mapper would make of these decoded values."""
    state["originator_id"] = stream
    state["originator_version"] = version
    event: Any = object.__new__(_event_class(topic))
    object.__setattr__(event, "__dict__", state)
    return event


def session_ids_in(notifications: Sequence[Notification]) -> set[str]:
    return {str(n.originator_id) for n in notifications if n.topic in SESSION_TOPICS}


# --- decoding -----------------------------------------------------------------------------

_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # there, not in the stubs


def _parse(data: bytes) -> Any:
    """``json.loads(data)`` for the store's UTF-8 JSON, without its wrappers."""
    try:
        text = data.decode()
        value, end = _SCAN(text, 0)
    except (AttributeError, UnicodeDecodeError, StopIteration):
        return json.loads(data)  # (its own answer, or its own error)
    if end != len(text):
        return json.loads(data)
    return value


def _fast_decode(transcoding: Any) -> Callable[[Any], Any]:
    """The transcoding's decode, or a shorter way to the same value for the
    store's own transcodings (as tests/projection/test_fold_decoding.py checks)."""
    kind = type(transcoding)
    if kind is DatetimeAsISO:
        return datetime.fromisoformat
    if kind is EnumAsName:
        return transcoding.members.__getitem__  # type: ignore[no-any-return]
    if kind is ProgressEntryAsDict:
        return _progress_entry
    return transcoding.decode  # type: ignore[no-any-return]


_OBJECT_TYPES = dict(RelatedObjectType.__members__)
_CHANGE_TYPES = dict(ChangeType.__members__)


def _progress_entry(data: dict[str, Any]) -> ProgressEntry:
    """``ProgressEntryAsDict().decode(data)``: the same frozen values, made
    without their constructors' Python-level argument handling."""
    names = _CHANGE_TYPES
    changes = tuple([new_count(names[n], s, f) for n, s, f in data["changes"]])
    return new_entry(_OBJECT_TYPES[data["object_type"]], changes)


# --- encoding -----------------------------------------------------------------------------


class _Unusual(Exception):
    """A value the JSON writer leaves to the library."""


# What JSON writes by itself (subclasses included): never handed to a transcoding.
_NATIVE = (str, int, float, list, tuple, dict)
_string = json.encoder.encode_basestring  # as the library's encoder (ensure_ascii=False)
_int = int.__repr__
_float = float.__repr__
_OBJECT_TYPE_NAMES = {t: _string(t._name_) for t in RelatedObjectType}
_CHANGE_TYPE_NAMES = {t: _string(t._name_) for t in ChangeType}


def _writers(types: dict[type, Any]) -> dict[type, Callable[[Any], str]]:
    """Per registered type, the JSON text the library's transcoder writes for
    an object of it: its tagged value (the transcoding's own encode, or a
    shorter way to the same text for the store's own transcodings)."""
    writers: dict[type, Callable[[Any], str]] = {}
    for kind, transcoding in types.items():
        if not issubclass(kind, _NATIVE):
            writers[kind] = _writer(transcoding, writers)
    return writers


def _writer(transcoding: Any, writers: dict[type, Callable[[Any], str]]) -> Callable[[Any], str]:
    head = '{"_type_":' + _string(transcoding.name) + ',"_data_":'
    kind = type(transcoding)
    if kind is DatetimeAsISO:
        return lambda o: f'{head}"{o.isoformat()}"}}'  # (nothing to escape in it)
    if kind is EnumAsName:
        return {m: head + _string(m._name_) + "}" for m in transcoding.type}.__getitem__
    if kind is ProgressEntryAsDict:
        object_types, change_types = _OBJECT_TYPE_NAMES, _CHANGE_TYPE_NAMES

        def progress_entry(o: ProgressEntry) -> str:
            changes = []
            for change in o.changes:
                change_type, successful, failed = change
                if type(change) is not ChangeCount or type(successful) is not int or type(failed) is not int:
                    raise _Unusual
                changes.append(f"[{change_types[change_type]},{successful},{failed}]")
            return f'{head}{{"object_type":{object_types[o.object_type]},"changes":[{",".join(changes)}]}}}}'

        return progress_entry
    encode = transcoding.encode
    return lambda o: f"{head}{_json(encode(o), writers)}}}"


def _json(value: Any, writers: dict[type, Callable[[Any], str]]) -> str:
    """The JSON text of ``value`` as the library's transcoder writes it
    (compact, not ASCII-escaped, registered types tagged). Exact types only:
    anything else raises _Unusual, and the caller leaves it to the library."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        return _int(value)
    if value is None:
        return "null"
    write = writers.get(kind)
    if write is not None:
        return write(value)
    if kind is dict:
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise _Unusual
            item_kind = type(item)
            if item_kind is str:
                items.append(f"{_string(key)}:{_string(item)}")
            elif (write := writers.get(item_kind)) is not None:
                items.append(f"{_string(key)}:{write(item)}")
            else:
                items.append(f"{_string(key)}:{_json(item, writers)}")
        return "{" + ",".join(items) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join([_json(item, writers) for item in value]) + "]"
    if kind is bool:
        return "true" if value else "false"
    if kind is float and math.isfinite(value):
        return _float(value)
    raise _Unusual


