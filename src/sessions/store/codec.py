"""The one codec: how every value is written into stored events (and into
the read model's resume state) and read back, behind the library's own
transcoder hook (``Application.construct_transcoder``), so that the store,
the fold, the history and the status all read and write through it.

The stored form: the event's fields as compact UTF-8 JSON (not ASCII-escaped),
a value of a registered type written as ``{"_type_": NAME, "_data_": DATA}``:
enums by name, progress entries as ``ProgressEntry.as_data`` gives them,
bytes as base64, datetimes as the library writes them (ISO 8601 with
microseconds and time zone). Every value round-trips exactly. Without the
tags, the same JSON is the canonical form the audit chain hashes
(domain/chain.py).

``SessionsTranscoder`` is the library's ``JSONTranscoder`` with a shorter way
to the same bytes and values: the library's JSON decoder calls back into
Python for every object and its encoder for every tagged value, while this
one parses plain JSON in C and converts only the tagged values, and writes
the JSON text in one pass. Anything out of the ordinary (a type it does not
write itself, a subclass of a JSON type) goes the library's way, so the
result is the library's in every case (tests/store/test_codec.py checks it).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    Transcoding,
    TranscodingNotRegisteredError,
)
from eventsourcing.utils import resolve_topic

from sessions.domain.enums import DOMAIN_ENUMS
from sessions.domain.progress import ProgressEntry

TYPE = "_type_"
DATA = "_data_"


class EnumAsName(Transcoding):
    def __init__(self, enum_type: type[Enum]):
        self.type = enum_type
        self.name = enum_type.__name__
        self.members = dict(enum_type.__members__)  # a plain dict: EnumType[...] is slow

    def encode(self, obj: Enum) -> str:
        return obj.name

    def decode(self, data: str) -> Enum:
        return self.members[data]


class ProgressEntryAsDict(Transcoding):
    type = ProgressEntry
    name = "ProgressEntry"

    def encode(self, obj: ProgressEntry) -> dict[str, Any]:
        return obj.as_data()

    def decode(self, data: dict[str, Any]) -> ProgressEntry:
        return ProgressEntry.from_data(data)


class BytesAsBase64(Transcoding):
    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


def domain_transcodings() -> list[Transcoding]:
    return [*(EnumAsName(t) for t in DOMAIN_ENUMS), ProgressEntryAsDict(), BytesAsBase64()]


def register_domain_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in domain_transcodings():
        transcoder.register(transcoding)


# Transcodings whose data never holds a tagged value (it is made of strings,
# numbers and lists of them): decoding does not look inside it.
_FLAT_DATA = (EnumAsName, ProgressEntryAsDict, BytesAsBase64)


class SessionsTranscoder(JSONTranscoder):
    """The library's JSONTranscoder, the same bytes and values, faster."""

    def __init__(self) -> None:
        super().__init__()
        self._writers: dict[type, Callable[[Any], str]] = {}
        self._decoders: dict[str, Callable[[Any], Any]] = {}
        self._flat: frozenset[str] = frozenset()

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._writers = _writers(self.types)
        self._decoders = {name: _decoder(t) for name, t in self.names.items()}
        self._flat = frozenset(
            t.name for t in self.names.values() if isinstance(t, _FLAT_DATA) or _is_library_scalar(t)
        )

    # --- bytes -> values ------------------------------------------------------------------

    def decode(self, data: bytes) -> Any:
        value = _parse(data)
        if type(value) is not dict:
            return self._decoded(value)
        # An event's fields, most of them strings or tagged values: the
        # common cases inline (the same as _decoded gives).
        decoders, flat = self._decoders, self._flat
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                name = item.get(TYPE)
                if len(item) == 2 and name in flat and DATA in item:
                    value[key] = decoders[name](item[DATA])
                else:
                    value[key] = self._decoded(item)
            elif kind is list:
                value[key] = [
                    decoders[v[TYPE]](v[DATA])
                    if type(v) is dict and len(v) == 2 and v.get(TYPE) in flat and DATA in v
                    else (self._decoded(v) if type(v) in _CONTAINERS else v)
                    for v in item
                ]
        return value

    def canonical(self, data: bytes) -> Any:
        """The stored JSON without the tags: the canonical form (domain/chain.py)."""
        return self._untagged(_parse(data))

    def _untagged(self, value: Any) -> Any:
        """Parsed stored JSON -> canonical values: every tagged value replaced
        by its data (whose own tags, if it may hold any, likewise)."""
        kind = type(value)
        if kind is dict:
            if len(value) == 2 and TYPE in value and DATA in value:
                name, data = value[TYPE], value[DATA]
                if type(data) not in _CONTAINERS or (type(name) is str and name in self._flat):
                    return data
                return self._untagged(data)
            untagged = self._untagged
            return {k: untagged(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
        if kind is list:
            untagged = self._untagged
            return [untagged(v) if type(v) in _CONTAINERS else v for v in value]
        return value

    def decode_with_canonical(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """An event's stored fields (a JSON object), parsed once: decoded,
        and in canonical form (a history shows both for every event)."""
        values = _parse(data)
        if type(values) is not dict:
            raise TypeError(f"stored fields are a JSON object, not {type(values).__name__}")
        decoders, flat = self._decoders, self._flat
        canonical: dict[str, Any] = {}
        for key, value in values.items():
            kind = type(value)
            if kind is dict:
                name = value.get(TYPE)
                if len(value) == 2 and name in flat and DATA in value:
                    canonical[key] = value[DATA]  # (flat: no tags inside)
                    values[key] = decoders[name](value[DATA])
                else:
                    canonical[key] = self._untagged(value)
                    values[key] = self._decoded(value)
            elif kind is list:
                canonical[key], values[key] = self._list_both(value)
            else:
                canonical[key] = value
        return values, canonical

    def _list_both(self, value: list[Any]) -> tuple[list[Any], list[Any]]:
        """A parsed list in canonical form and decoded (decode_with_canonical's
        lists, such as a report's entries: tagged values of flat data inline)."""
        decoders, flat = self._decoders, self._flat
        canonical, decoded = [], []
        for item in value:
            kind = type(item)
            if kind is dict and len(item) == 2 and item.get(TYPE) in flat and DATA in item:
                canonical.append(item[DATA])
                decoded.append(decoders[item[TYPE]](item[DATA]))
            elif kind is dict or kind is list:
                canonical.append(self._untagged(item))
                decoded.append(self._decoded(item))
            else:
                canonical.append(item)
                decoded.append(item)
        return canonical, decoded

    def _decoded(self, value: Any) -> Any:
        """``value`` (parsed JSON) with its tagged values decoded, bottom-up
        as the library's object hook does it; containers are changed in place."""
        kind = type(value)
        if kind is dict:
            if len(value) == 2 and TYPE in value and DATA in value:
                return self._tagged(value[TYPE], value[DATA])
            decoded = self._decoded
            for key, item in value.items():
                item_kind = type(item)
                if item_kind is dict or item_kind is list:
                    value[key] = decoded(item)
            return value
        if kind is list:
            decoded, decoders, flat = self._decoded, self._decoders, self._flat
            items = []
            for item in value:
                item_kind = type(item)
                if item_kind is dict:
                    name = item.get(TYPE)
                    if len(item) == 2 and name in flat and DATA in item:
                        item = decoders[name](item[DATA])
                    else:
                        item = decoded(item)
                elif item_kind is list:
                    item = decoded(item)
                items.append(item)
            return items
        return value

    def _tagged(self, name: Any, data: Any) -> Any:
        try:
            transcoding = self.names[name]
        except (KeyError, TypeError):
            # As the library refuses it (a name that is not a string is a dict:
            # the library's hook has decoded it by then, and fails the same way).
            raise TranscodingNotRegisteredError(
                f"Data serialized with name '{name}' is not deserializable. "
                "Please register a custom transcoding for this type."
            ) from None
        if type(data) in _CONTAINERS and name not in self._flat:
            data = self._decoded(data)
        return self._decoders[transcoding.name](data)

    # --- values -> bytes ------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        try:
            return _json(obj, self._writers).encode("utf8")
        except _Unusual:  # anything out of the ordinary: the library's way (and error)
            return super().encode(obj)


def event_of(topic: str, stream: Any, version: int, values: dict[str, Any]) -> Any:
    """The domain event of decoded stored fields, built as the library's
    ``Mapper.to_domain_event`` builds it (for readers that decode with the
    codec directly: the fold, the history)."""
    cls, class_version = _event_class(topic)
    values["originator_id"] = stream
    values["originator_version"] = version
    if class_version > 1 or "class_version" in values:
        from_version = values.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(values)
            from_version += 1
    event: Any = object.__new__(cls)
    object.__setattr__(event, "__dict__", values)
    return event


@cache
def _event_class(topic: str) -> tuple[type, int]:
    cls = resolve_topic(topic)
    return cls, getattr(cls, "class_version", 1)


def codec_of(mapper: Mapper[Any]) -> SessionsTranscoder:
    transcoder = mapper.transcoder
    if not isinstance(transcoder, SessionsTranscoder):
        raise TypeError(f"the store's transcoder is {type(transcoder).__name__}, not the codec")
    return transcoder


# --- parsing ----------------------------------------------------------------------------

_CONTAINERS = (dict, list)
# What json.loads runs, without its wrappers (there, not in the stubs).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse(data: bytes) -> Any:
    """``json.loads`` of the store's UTF-8 JSON, without its wrappers: the
    same value, and the library's errors (UnicodeDecodeError, JSONDecodeError)."""
    text = data.decode("utf8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # (its own error)
    if end != len(text):
        return json.loads(text)  # surrounding whitespace is fine, anything else its error
    return value


def _decoder(transcoding: Transcoding) -> Callable[[Any], Any]:
    """The transcoding's decode, or the function it calls for its data (one
    Python call less per value: decoding is most of a fold's reading)."""
    if type(transcoding) is DatetimeAsISO:
        return datetime.fromisoformat  # (what DatetimeAsISO.decode calls)
    if type(transcoding) is EnumAsName:
        return transcoding.members.__getitem__
    if type(transcoding) is ProgressEntryAsDict:
        return ProgressEntry.from_data
    return transcoding.decode


def _is_library_scalar(transcoding: Transcoding) -> bool:
    """The library's own transcodings (UUID, Decimal, datetime) write strings."""
    return type(transcoding).__module__ == "eventsourcing.persistence"


# --- writing ----------------------------------------------------------------------------


class _Unusual(Exception):
    """A value the JSON writer leaves to the library."""


# What JSON writes by itself (subclasses included): never handed to a transcoding.
_NATIVE = (str, int, float, list, tuple, dict)
_string = json.encoder.encode_basestring  # as the library's encoder (ensure_ascii=False)
_int = int.__repr__
_float = float.__repr__


def _writers(types: dict[type, Transcoding]) -> dict[type, Callable[[Any], str]]:
    """Per registered type, the JSON text the library writes for an object of
    it: the tag and the transcoding's data. An enum's texts are written once,
    each member's from the transcoding's own encode."""
    writers: dict[type, Callable[[Any], str]] = {}
    for kind, transcoding in types.items():
        if issubclass(kind, _NATIVE):
            continue
        head = "{" + _string(TYPE) + ":" + _string(transcoding.name) + "," + _string(DATA) + ":"
        if type(transcoding) is EnumAsName:
            members = transcoding.members.values()
            texts = {m: head + _json(transcoding.encode(m), writers) + "}" for m in members}
            writers[kind] = texts.__getitem__
        elif type(transcoding) is DatetimeAsISO:
            writers[kind] = _datetime_writer(head)
        elif type(transcoding) is ProgressEntryAsDict:
            writers[kind] = _entry_writer(head)
        else:
            writers[kind] = _tagged_writer(head, transcoding.encode, writers)
    return writers


def _plain_encoder() -> Callable[[Any], str]:
    """The library encoder's text for data without tagged values (compact,
    not ASCII-escaped), without its per-call set-up."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    encode = make(
        None, encoder.default, _string, None, encoder.key_separator, encoder.item_separator,
        encoder.sort_keys, encoder.skipkeys, encoder.allow_nan,
    )
    return lambda data: "".join(encode(data, 0))


_plain_json = _plain_encoder()


def _datetime_writer(head: str) -> Callable[[datetime], str]:
    return lambda o: f'{head}"{o.isoformat()}"}}'  # an ISO text has nothing to escape


def _entry_writer(head: str) -> Callable[[ProgressEntry], str]:
    return lambda o: f"{head}{_plain_json(o.as_data())}}}"  # plain data: JSON's C encoder


def _tagged_writer(
    head: str, encode: Callable[[Any], Any], writers: dict[type, Callable[[Any], str]]
) -> Callable[[Any], str]:
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
