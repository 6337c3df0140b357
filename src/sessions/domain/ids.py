"""Identifiers in the public cloud's style: a three-letter prefix and 17
lower-case base32 characters (20 in all, well inside the 50-character limit)."""

from __future__ import annotations

import base64
import hashlib
import secrets

_ALPHABET_LEN = 17


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower()[:_ALPHABET_LEN]


def new_id(prefix: str) -> str:
    return prefix + _b32(secrets.token_bytes(11))


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id for the given parts (used to key retries)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return prefix + _b32(digest)


SESSION_PREFIX = "ses"
OPERATION_PREFIX = "opn"
