"""The service's logs: plain text or JSON lines, and the access log.

``configure`` sets up the root handler on standard error, in one of two
formats: ``text`` (``time LEVEL logger: message``) or ``json`` (one JSON
object per line: ``time``, ``level``, ``logger``, ``message``, then any
fields the line carries, and ``exception`` with a traceback when there is
one).

Records are written by a thread of their own (``_Writer``): a serving
thread only queues its record (an access line: its fields), and the writer
writes what has gathered with one write and one flush. Access lines wait up
to 50 ms for company; any other line is written at once, with the access
lines queued before it. So the access log costs a call about a queue's put,
not a record, a format and a write to standard error each.

The access log (logger ``sessions.access``) has one line per call that
reaches a service's method: its method, status code, duration, principal,
session id (when the request has one) and whether it carried an idempotency
key. It never holds a token, a credential or a request's content. Its mode
is ``on`` (every call), ``errors`` (calls that did not end OK) or ``off``.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
ACCESS_MODES = ("on", "errors", "off")

access_log = logging.getLogger("sessions.access")
_access_mode = "on"
_writer: _Writer | None = None  # set by configure

# What every LogRecord has: anything else on a record is a field of the line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# In a worker of `serve --workers N`: its index and pid, on every line.
_worker: dict[str, int] | None = None


def set_worker(index: int, pid: int) -> None:
    """Mark every line of this process as worker ``index``'s (before configure)."""
    global _worker
    _worker = {"worker": index, "pid": pid}


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
        if _worker is not None:
            line.update(_worker)
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


# s: how long queued access lines wait for more before they are written (any
# other line is written at once, with the access lines queued before it).
ACCESS_GATHER = 0.05

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Writer(logging.Handler):
    """A handler that hands records to a writer thread, which formats what
    has gathered and writes it to ``stream`` at once."""

    _STOP = logging.makeLogRecord({})

    def __init__(self, stream: Any, formatter: logging.Formatter, access_text: _AccessText | None = None):
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self._access_text = access_text  # access lines in the text format, made without a record
        # Records, or (time, fields) of access lines (see log_call).
        self._records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent = threading.Event()  # a line that is not an access line is queued
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:  # merged now: an argument may change after the call
            try:
                record.msg, record.args = record.getMessage(), None
            except Exception:  # noqa: BLE001 - a bad log call never fails its caller (logging's rule)
                self.handleError(record)
                return
        self._records.put(record)
        self._urgent.set()

    def put_access(self, created: float, fields: tuple[Any, ...]) -> None:
        """An access line's fields, made into a record on the writer's thread."""
        self._records.put((created, fields))

    def handle(self, record: logging.LogRecord) -> bool:  # (no lock: the queue is one)
        if self.filter(record):
            self.emit(record)
        return True

    def _write(self) -> None:
        records = self._records
        while True:
            first = records.get()
            if isinstance(first, tuple):  # access lines wait a little for company
                self._urgent.wait(ACCESS_GATHER)
            self._urgent.clear()
            batch = [first]  # and all that gathered meanwhile: one write
            while True:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            access_text = self._access_text
            for record in batch:
                if record is self._STOP:
                    continue
                if isinstance(record, tuple):
                    if access_text is not None:
                        lines.append(access_text.line(*record))
                        continue
                    record = _access_record(*record)
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:  # noqa: BLE001 - as logging does: report, go on
                    self.handleError(record)
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # standard error is gone: nothing to tell it
            if any(record is self._STOP for record in batch):
                return

    def close(self) -> None:
        """Write what is queued, then stop (at exit, or when reconfigured)."""
        if self._thread.is_alive():
            self._records.put(self._STOP)
            self._urgent.set()
            self._thread.join(5)
        super().close()


def configure(level: str = "INFO", format: str = "text", access: str = "on") -> None:
    """Log to standard error at ``level`` in ``format``; the access log in
    ``access`` mode. Logging that is set up already (a program embedding the
    service, a test runner) is left as it is, as logging.basicConfig does."""
    global _writer
    if format not in FORMATS:
        raise ValueError(f"log format {format!r}: one of {', '.join(FORMATS)}")
    set_access_mode(access)
    root = logging.getLogger()
    if root.handlers:
        return
    text = TEXT_FORMAT
    if _worker is not None:
        text = text.replace("%(name)s", f"[worker {_worker['worker']} pid {_worker['pid']}] %(name)s")
    if format == "json":
        _writer = _Writer(sys.stderr, JsonFormatter())
    else:
        _writer = _Writer(sys.stderr, logging.Formatter(text), _AccessText(text))
    root.addHandler(_writer)
    root.setLevel(level)
    # No format here shows threads or processes: skip looking them up for
    # every record (the access log writes one per call).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


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
    """One access line (``started``: time.perf_counter() when the call began).

    When the logs are ours (``configure``) and nothing else listens to the
    access logger, the serving thread only queues the fields: the writer's
    thread makes the record and its line. Otherwise the record goes through
    the logger as any other."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    fields = (method, code, duration_ms, principal, session_id, idempotency_key)
    writer = _writer
    if (
        writer is not None
        and not access_log.handlers
        and access_log.propagate
        and logging.root.handlers == [writer]
    ):
        writer.put_access(time.time(), fields)
    else:
        access_log.handle(_access_record(time.time(), fields))


def _access_message(fields: tuple[Any, ...]) -> str:
    method, code, duration_ms, principal, session_id, idempotency_key = fields
    return (
        f"{method} {code} {duration_ms:.1f}ms principal={principal}"
        + (f" session_id={session_id}" if session_id else "")
        + (" idempotency_key=yes" if idempotency_key else "")
    )


def _access_record(created: float, fields: tuple[Any, ...]) -> logging.LogRecord:
    method, code, duration_ms, principal, session_id, idempotency_key = fields
    record = logging.LogRecord(access_log.name, logging.INFO, __file__, 0, _access_message(fields), None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.method = method
    record.code = code
    record.duration_ms = duration_ms
    record.principal = principal
    record.session_id = session_id or None
    record.idempotency_key = idempotency_key
    return record


class _AccessText:
    """An access line in the text format straight from its fields: the text
    ``logging.Formatter(fmt)`` makes of ``_access_record``'s record, without
    the record, the formatter's lookups and a clock conversion per line (the
    date and time are made once a second). The writer makes one per call,
    holding the interpreter lock: 3 us a line instead of 13 (timeit, 2-core
    Xeon, 2026-12-03), a few percent of a GetSession's server CPU.
    tests/cli/test_log_records.py holds the two lines equal, across seconds.

    The date cache cannot go stale: it is keyed by the whole second it is
    made of, and only the writer's one thread uses it (so no lock)."""

    def __init__(self, fmt: str):
        self.fmt = fmt.replace("%(levelname)s", logging.getLevelName(logging.INFO)).replace(
            "%(name)s", access_log.name.replace("%", "%%")
        )
        self._msec_format = logging.Formatter.default_msec_format or "%s,%03d"
        self._second = -1
        self._stamp = ""

    def line(self, created: float, fields: tuple[Any, ...]) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(logging.Formatter.default_time_format, time.localtime(second))
        asctime = self._msec_format % (self._stamp, (created - second) * 1000)
        return self.fmt % {"asctime": asctime, "message": _access_message(fields)} + "\n"


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
