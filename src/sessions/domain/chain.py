"""Tamper evidence: every event carries a link that chains it to its stream.

    link(n) = sha256(link(n-1) || canonical(event n)),  link(0) = b""

``link`` values are hex strings; the hash input uses their raw bytes.
``canonical(event)`` is UTF-8 JSON with sorted keys, no insignificant
whitespace, non-ASCII characters kept, of

    {"stream": <originator id>, "version": <int>, "type": <event topic>,
     "data": {<every stored field of the event except "link">}}

where values are encoded as they are stored, minus the store's type tags:
datetimes as ISO 8601 (Python's isoformat), enums by name, progress entries
as {"object_type": NAME, "changes": [[CHANGE_TYPE, successful, failed], ...]}
(ProgressEntry.as_data), bytes as base64, tuples as arrays. An outside tool
can therefore re-check a stream from the stored rows alone: parse each
event's JSON state, replace every {"_type_": T, "_data_": D} object by D
(the store's codec, store/codec.py, writes them), drop "link", and hash.

A session's last link is also written into its schedule's SessionEnded
event, so cutting events off the end of an ended session is detected too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from sessions.domain.progress import ProgressEntry

GENESIS = ""


def canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, ProgressEntry):
        return value.as_data()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [canonical_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): canonical_value(v) for k, v in value.items()}
    return value


def canonical_bytes(stream: str, version: int, topic: str, data: Mapping[str, Any]) -> bytes:
    document = {
        "stream": stream,
        "version": version,
        "type": topic,
        "data": {k: v for k, v in data.items() if k != "link"},
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def next_link(previous: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + canonical).hexdigest()


def link_for(previous: str, stream: str, version: int, topic: str, fields: Mapping[str, Any]) -> str:
    """The link of an event with these domain values (what the domain records)."""
    data = {k: canonical_value(v) for k, v in fields.items()}
    return next_link(previous, canonical_bytes(stream, version, topic, data))
