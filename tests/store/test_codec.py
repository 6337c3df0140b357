"""The store's codec (store/codec.py) writes the bytes and reads the values
the library's own JSONTranscoder writes and reads, for the store's events
and for values out of the ordinary; stored data written without it reads
the same; the canonical form is the stored JSON without its tags."""

from __future__ import annotations

import enum
import json
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from codec_support import library_transcoder
from eventsourcing.persistence import JSONTranscoder, Mapper, TranscodingNotRegisteredError

from sessions.domain.base import SnapshotOfState
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType, SyncMode
from sessions.domain.progress import INT64_MAX, ChangeCount, ProgressEntry
from sessions.domain.session import Session
from sessions.store.application import SessionsApplication
from sessions.store.codec import SessionsTranscoder, codec_of
from sessions.store.urls import parse_store_url

T0 = datetime(2026, 3, 1, 12, 0, 0, 125000, tzinfo=UTC)
AWKWARD = 'say "no" \\ twice\nthen\ttab \x01\x1f é 日本 😀 \u2028 </script>'


@pytest.fixture(scope="module")
def codec() -> SessionsTranscoder:
    app = SessionsApplication(parse_store_url("memory://"))
    try:
        return codec_of(app.mapper)
    finally:
        app.close()


@pytest.fixture(scope="module")
def library() -> JSONTranscoder:
    return library_transcoder()


def entries(rng: random.Random) -> list[ProgressEntry]:
    return [
        ProgressEntry(
            object_type,
            tuple(
                ChangeCount(c, rng.randint(0, INT64_MAX // 8), rng.randint(0, 50))
                for c in rng.sample(list(ChangeType), rng.randint(1, 6))
            ),
        )
        for object_type in rng.sample(list(RelatedObjectType), rng.randint(1, 3))
    ]


def session_states() -> list[dict[str, Any]]:
    """Event states and whole-session states (the read model's resume state)."""
    rng = random.Random(5)
    states: list[dict[str, Any]] = []
    for number in range(20):
        session = Session(
            id=f"ses{number:017d}",
            subject_container_id=AWKWARD if number % 5 == 0 else f"c-{number}",
            agent_id="agent-1",
            session_type=list(SessionType)[number % 4],
            sync_mode=list(SyncMode)[number % 2],
            expires_at=T0 + timedelta(minutes=10),
            principal="agent:x",
            idempotency_key="k" * number,
            timestamp=T0 + timedelta(microseconds=number),
        )
        for k in range(number % 7):
            now = T0 + timedelta(seconds=k + 1)
            session.report_progress(entries(rng), now=now, policy=_policy(), principal="agent:x")
        if number % 3 == 0:
            session.close(failed=True, fail_reason=AWKWARD, now=T0 + timedelta(seconds=30), principal="agent:x")
        states.append(vars(SnapshotOfState.take(session)))
        states.extend(vars(e) for e in session.collect_events())
    return [{k: v for k, v in s.items() if k not in ("originator_id", "originator_version")} for s in states]


def _policy() -> Any:
    from sessions.domain.policy import Policy

    return Policy()


class Level(enum.IntEnum):  # an int: JSON writes it as one, never as a tagged value
    LOW = 1


class Name(str):
    pass


ODD_STATES: list[dict[str, Any]] = [
    {"ratio": 0.1, "big": 10**30, "neg": -5, "yes": True, "no": False, "none": None},
    {"nan": math.nan},
    {"inf": -math.inf},
    {"level": Level.LOW, "name": Name("x"), "nested": {"when": T0, "types": [SessionType.AD_SYNC]}},
    {"keys": {1: "a", None: "b", 2.5: "c", False: "d"}},
    {"bytes": b"\x00\xff", "entries": [ProgressEntry(RelatedObjectType.USER, ((ChangeType.CREATE, 1, 2),))]},  # type: ignore[arg-type]
    {"bool count": [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, True, 0),))]},
    {"deep": [[{"x": [T0, {"y": SyncMode.DELTA}]}]], "empty": {}, "tuple": (1, (2, 3))},
    {"uuid": UUID(int=7), "decimal": Decimal("1.10"), "bytes": b""},
    {"looks tagged": {"_type_": "x"}, "three keys": {"_type_": "x", "_data_": 1, "more": 2}},
]
STATES = session_states()


def test_the_store_uses_the_codec() -> None:
    app = SessionsApplication(parse_store_url("memory://"))
    try:
        assert type(app.mapper.transcoder) is SessionsTranscoder
    finally:
        app.close()


@pytest.mark.parametrize("state", STATES + ODD_STATES)
def test_the_codec_writes_the_librarys_bytes(
    state: dict[str, Any], codec: SessionsTranscoder, library: JSONTranscoder
) -> None:
    try:
        expected = library.encode(state)
    except Exception as e:  # noqa: BLE001 - then the codec must fail the same way
        with pytest.raises(type(e)):
            codec.encode(state)
        return
    assert codec.encode(state) == expected


def test_a_type_nobody_registered_fails_as_in_the_library(codec: SessionsTranscoder) -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        codec.encode({"s": {1}})
    with pytest.raises(TranscodingNotRegisteredError):
        codec.decode(b'{"s":{"_type_":"nobody","_data_":1}}')


def typed(value: Any) -> Any:
    """A value with the exact type of everything in it, to compare types too."""
    if isinstance(value, dict):
        return ("dict", {k: typed(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, ProgressEntry):
        return ("ProgressEntry", typed(value.object_type), typed(value.changes))
    return (type(value).__name__, value)


@pytest.mark.parametrize("state", STATES + ODD_STATES)
def test_the_codec_reads_the_librarys_values(
    state: dict[str, Any], codec: SessionsTranscoder, library: JSONTranscoder
) -> None:
    try:
        stored = library.encode(state)  # as a store without the codec wrote it
    except Exception:  # noqa: BLE001 - nothing stored, nothing to read
        return
    ours, theirs = codec.decode(stored), library.decode(stored)
    if any(isinstance(v, float) and math.isnan(v) for v in theirs.values()):
        assert json.dumps(ours) == json.dumps(theirs)  # (NaN is not equal to itself)
        return
    assert typed(ours) == typed(theirs)


@pytest.mark.parametrize("state", STATES + ODD_STATES[:1] + ODD_STATES[3:])
def test_canonical_is_the_stored_json_without_tags(
    state: dict[str, Any], codec: SessionsTranscoder, library: JSONTranscoder
) -> None:
    try:
        stored = library.encode(state)
    except Exception:  # noqa: BLE001
        return

    def untag(value: Any) -> Any:  # as chain.py tells an outside tool to do it
        if isinstance(value, dict):
            if set(value) == {"_type_", "_data_"}:
                return untag(value["_data_"])
            return {k: untag(v) for k, v in value.items()}
        if isinstance(value, list):
            return [untag(v) for v in value]
        return value

    assert codec.canonical(stored) == untag(json.loads(stored))
    values, canonical = codec.decode_with_canonical(stored)
    assert canonical == untag(json.loads(stored))
    assert typed(values) == typed(library.decode(stored))


def test_an_event_decodes_as_the_librarys_mapper_decodes_it(codec: SessionsTranscoder, library: JSONTranscoder) -> None:
    session = Session(
        id="ses1", subject_container_id="c", agent_id="a", session_type=SessionType.LDAP_SYNC,
        sync_mode=SyncMode.DELTA, expires_at=T0, principal="p", idempotency_key="", timestamp=T0,
    )
    session.report_progress(entries(random.Random(1)), now=T0 - timedelta(seconds=1), policy=_policy(), principal="p")
    for event in session.collect_events():
        stored = Mapper(library).to_stored_event(event)
        assert Mapper(codec).to_stored_event(event) == stored
        ours, theirs = Mapper(codec).to_domain_event(stored), Mapper(library).to_domain_event(stored)
        assert type(ours) is type(theirs) and typed(vars(ours)) == typed(vars(theirs))


@pytest.mark.parametrize("stored", [b"", b"\xff{}", b'{"a":1}x', b"{", b' {"a":1} ', b"[1,2]", b'"s"', b"null"])
def test_bytes_out_of_the_ordinary_read_as_in_the_library(
    stored: bytes, codec: SessionsTranscoder, library: JSONTranscoder
) -> None:
    try:
        expected = library.decode(stored)
    except Exception as e:  # noqa: BLE001 - then the codec must fail the same way
        with pytest.raises(type(e)):
            codec.decode(stored)
        return
    assert codec.decode(stored) == expected
