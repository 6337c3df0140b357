"""ListSessions pages: opaque page tokens, and how a listed row is shown.

A page token is ``base64url(body || HMAC-SHA256(key, body))`` without padding,
where ``body`` is::

    version        1 byte   (1)
    created_at     8 bytes  signed, big-endian: the last row's created_at (µs)
    container      16 bytes SHA-256 of the subject_container_id, truncated
    filter         16 bytes SHA-256 of the filter's canonical form, truncated
    session_id     the rest, UTF-8: the last row's session_id

so a token is at most 164 characters. The signature detects any change to
the token; the two digests tell a token of another container or of another
filter apart from a forged one, so each misuse gets its own message. Page
size is not bound: a client may change it between pages.

The HMAC key is 32 random bytes kept in the read model's database (created
on first use by whichever process lists first; see
``SessionRows.page_token_key``), so tokens work across restarts and
across any number of API processes on one store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from datetime import datetime

from sessions.api import convert
from sessions.api.protos import session_pb2
from sessions.domain.errors import InvalidArgument
from sessions.projection.listing import Cursor, ListedRow

TOKEN_VERSION = 1
_HEAD = struct.Struct(">Bq16s16s")
_MAC_SIZE = 32
_MAX_SESSION_ID = 50
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
FIELD = "page_token"


def _digest(kind: bytes, value: str) -> bytes:
    return hashlib.sha256(kind + b"\x00" + value.encode("utf-8")).digest()[:16]


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"sessions.ListSessions.page_token\x00" + body, hashlib.sha256).digest()


def encode_token(key: bytes, container: str, canonical_filter: str, last: Cursor) -> str:
    body = _HEAD.pack(
        TOKEN_VERSION,
        last.created_at,
        _digest(b"container", container),
        _digest(b"filter", canonical_filter),
    ) + last.session_id.encode("utf-8")
    return base64.urlsafe_b64encode(body + _mac(key, body)).rstrip(b"=").decode("ascii")


def decode_token(key: bytes, token: str, container: str, canonical_filter: str) -> Cursor:
    """The cursor a token carries, once it is proven to be ours and to belong
    to this container and filter; InvalidArgument on page_token otherwise."""
    not_ours = InvalidArgument(FIELD, "is not a page token this service issued")
    if not _ALPHABET.fullmatch(token):
        raise not_ours
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise not_ours from None
    if (
        # one spelling per token: no unused bits set, no padding
        base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token
        or len(raw) < _HEAD.size + 1 + _MAC_SIZE
        or len(raw) > _HEAD.size + _MAX_SESSION_ID * 4 + _MAC_SIZE
        or raw[0] != TOKEN_VERSION
    ):
        raise not_ours
    body, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise InvalidArgument(
            FIELD, "was altered or was not issued by this service (its signature does not match)"
        )
    _, created_at, container_digest, filter_digest = _HEAD.unpack_from(body)
    if not hmac.compare_digest(container_digest, _digest(b"container", container)):
        raise InvalidArgument(
            FIELD,
            "was issued for another subject_container_id; list from the first page "
            "(no page_token) for this container",
        )
    if not hmac.compare_digest(filter_digest, _digest(b"filter", canonical_filter)):
        raise InvalidArgument(
            FIELD,
            "was issued for another filter; send the filter of the first page, "
            "or list from the first page (no page_token) with the new one",
        )
    try:
        session_id = body[_HEAD.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise not_ours from None
    return Cursor(created_at, session_id)


def shown(row: ListedRow, now: datetime) -> session_pb2.SynchronizationSession:
    """The stored session as shown at ``now``, the moment the page's filter used."""
    return convert.served_session(row.session, row.status, row.expires_at, now)
