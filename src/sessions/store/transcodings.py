"""How domain values are written into stored events: enums by name (readable,
and safe if numbers were ever reordered), progress entries as plain objects,
bytes as base64. Datetimes use the library's ISO transcoding (microseconds,
with time zone), so every value round-trips exactly."""

from __future__ import annotations

import base64
from enum import Enum
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from sessions.domain.enums import DOMAIN_ENUMS, ChangeType, RelatedObjectType
from sessions.domain.progress import ChangeCount, ProgressEntry


class EnumAsName(Transcoding):
    def __init__(self, enum_type: type[Enum]):
        self.type = enum_type
        self.name = enum_type.__name__
        self.members = dict(enum_type.__members__)  # a plain dict: EnumType[...] is slow

    def encode(self, obj: Enum) -> str:
        return obj.name

    def decode(self, data: str) -> Enum:
        return self.members[data]


_OBJECT_TYPES = dict(RelatedObjectType.__members__)
_CHANGE_TYPES = dict(ChangeType.__members__)


class ProgressEntryAsDict(Transcoding):
    type = ProgressEntry
    name = "ProgressEntry"

    def encode(self, obj: ProgressEntry) -> dict[str, Any]:
        return {
            "object_type": obj.object_type.name,
            "changes": [[c.change_type.name, c.successful, c.failed] for c in obj.changes],
        }

    def decode(self, data: dict[str, Any]) -> ProgressEntry:
        return ProgressEntry(
            object_type=_OBJECT_TYPES[data["object_type"]],
            changes=tuple(
                ChangeCount(_CHANGE_TYPES[name], successful, failed)
                for name, successful, failed in data["changes"]
            ),
        )


class BytesAsBase64(Transcoding):
    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


def register_domain_transcodings(transcoder: JSONTranscoder) -> None:
    for enum_type in DOMAIN_ENUMS:
        transcoder.register(EnumAsName(enum_type))
    transcoder.register(ProgressEntryAsDict())
    transcoder.register(BytesAsBase64())
