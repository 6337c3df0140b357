"""The service's logs: plain text or JSON lines, and the access log.

``configure`` sets up the root handler on standard error, in one of two
formats: ``text`` (``time LEVEL logger: message``) or ``json`` (one JSON
object per line: ``time``, ``level``, ``logger``, ``message``, then any
fields the line carries, and ``exception`` with a traceback when there is
one).

The access log (logger ``sessions.access``) has one line per call that
reaches a service's method: its method, status code, duration, principal,
session id (when the request has one) and whether it carried an idempotency
key. It never holds a token, a credential or a request's content. Its mode
is ``on`` (every call), ``errors`` (calls that did not end OK) or ``off``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
ACCESS_MODES = ("on", "errors", "off")

access_log = logging.getLogger("sessions.access")
_access_mode = "on"

# What every LogRecord has: anything else on a record is a field of the line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "INFO", format: str = "text", access: str = "on") -> None:
    """Log to standard error at ``level`` in ``format``; the access log in ``access`` mode."""
    global _access_mode
    if format not in FORMATS:
        raise ValueError(f"log format {format!r}: one of {', '.join(FORMATS)}")
    if access not in ACCESS_MODES:
        raise ValueError(f"access log {access!r}: one of {', '.join(ACCESS_MODES)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    _access_mode = access


def access_mode() -> str:
    return _access_mode


def set_access_mode(mode: str) -> None:
    global _access_mode
    if mode not in ACCESS_MODES:
        raise ValueError(f"access log {mode!r}: one of {', '.join(ACCESS_MODES)}")
    _access_mode = mode


def wants_access(code: str) -> bool:
    """Whether a call that ended with ``code`` is logged (cheap: asked per call)."""
    mode = _access_mode
    if mode == "off" or (mode == "errors" and code == "OK"):
        return False
    return access_log.isEnabledFor(logging.INFO)


def log_call(
    method: str,
    code: str,
    started: float,
    principal: str,
    session_id: str,
    idempotency_key: bool,
) -> None:
    """One access line (``started``: time.perf_counter() when the call began)."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    access_log.info(
        "%s %s %.1fms principal=%s%s%s",
        method,
        code,
        duration_ms,
        principal,
        f" session_id={session_id}" if session_id else "",
        " idempotency_key=yes" if idempotency_key else "",
        extra={
            "method": method,
            "code": code,
            "duration_ms": duration_ms,
            "principal": principal,
            "session_id": session_id or None,
            "idempotency_key": idempotency_key,
        },
    )


# Settings whose values are never logged as they are.
SECRET_SETTINGS = frozenset({"token", "password", "sslpassword"})


def log_settings(logger: logging.Logger, settings: Mapping[str, Any]) -> None:
    """Every setting at start, in one line (secrets hidden; give store URLs
    already redacted)."""
    shown = {
        key: ("***" if key in SECRET_SETTINGS and value else value)
        for key, value in sorted(settings.items())
    }
    logger.info(
        "settings: %s",
        " ".join(f"{key}={value}" for key, value in shown.items()),
        extra={"settings": shown},
    )
