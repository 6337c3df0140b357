"""The reference for the store's codec: the library's own JSONTranscoder with
the library's and the store's transcodings registered, as a store without
the codec would have it."""

from __future__ import annotations

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from sessions.store.codec import domain_transcodings


def library_transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *domain_transcodings()):
        transcoder.register(transcoding)
    return transcoder
