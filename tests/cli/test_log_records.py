"""The log's pieces in process: an access record through the logger (when
the logs are not the CLI's own), and the JSON formatter's line."""

from __future__ import annotations

import json
import logging
import time

import pytest

from sessions import logs


def test_an_access_record_through_the_logger_carries_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    assert logs._writer is None  # (not configured in this process: the logger's path)
    with caplog.at_level(logging.INFO, logger="sessions.access"):
        logs.log_call("pkg.Service/GetSession", "NOT_FOUND", time.perf_counter(), "agent:a", "ses1", True)
    (record,) = [r for r in caplog.records if r.name == "sessions.access"]
    assert record.getMessage().startswith("pkg.Service/GetSession NOT_FOUND ")
    assert record.getMessage().endswith("ms principal=agent:a session_id=ses1 idempotency_key=yes")
    fields = (record.method, record.code, record.principal)  # type: ignore[attr-defined]
    assert fields == ("pkg.Service/GetSession", "NOT_FOUND", "agent:a")
    assert record.session_id == "ses1" and record.idempotency_key is True  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]


def test_a_json_line_has_time_level_logger_message_fields_and_the_exception() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = logging.getLogger("sessions.test").makeRecord(
            "sessions.test", logging.ERROR, __file__, 1, "failed: %s", ("x",), None,
            extra={"session_id": "ses2"},
        )
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "ERROR" and line["logger"] == "sessions.test"
    assert line["message"] == "failed: x" and line["session_id"] == "ses2"
    assert line["time"].endswith("+00:00")
    assert "ValueError: bad thing" in line["exception"]
    assert "\n" not in logs.JsonFormatter().format(record)  # one line, whatever the traceback


@pytest.mark.parametrize(("mode", "code", "logged"), [
    ("on", "OK", True), ("errors", "OK", False), ("errors", "INTERNAL", True), ("off", "NOT_FOUND", False),
])
def test_access_modes(mode: str, code: str, logged: bool, caplog: pytest.LogCaptureFixture) -> None:
    before = logs.access_mode()
    logs.set_access_mode(mode)
    try:
        with caplog.at_level(logging.INFO, logger="sessions.access"):
            assert logs.wants_access(code) is logged
        with caplog.at_level(logging.WARNING, logger="sessions.access"):
            assert logs.wants_access(code) is False  # a level above INFO silences it
    finally:
        logs.set_access_mode(before)


def test_a_log_call_whose_arguments_do_not_fit_never_fails_its_caller(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    stream = io.StringIO()
    writer = logs._Writer(stream, logging.Formatter("%(message)s"))
    logger = logging.getLogger("sessions.test.bad-args")
    logger.addHandler(writer)
    logger.propagate = False
    try:
        logger.error("%d items", "abc")  # would raise TypeError in the caller
        logger.error("after it: %s", "fine")
    finally:
        logger.removeHandler(writer)
        writer.close()
    assert "after it: fine" in stream.getvalue()
    assert "Logging error" in capsys.readouterr().err  # logging's own report of the bad call


@pytest.mark.parametrize("fmt", [
    logs.TEXT_FORMAT,
    logs.TEXT_FORMAT.replace("%(name)s", "[worker 1 pid 2] %(name)s"),  # a worker's lines
])
def test_a_text_access_line_made_from_its_fields_is_the_formatters_line(fmt: str) -> None:
    fast = logs._AccessText(fmt)
    formatter = logging.Formatter(fmt)
    fields = [
        ("pkg.Service/GetSession", "OK", 0.04, "agent:a", "", False),
        ("pkg.Service/ReportSessionProgress", "ABORTED", 12.345, "agent:b%s", "ses1", True),
        ("pkg.Service/ListSessions", "INVALID_ARGUMENT", 1234.5, "-", "ses%(x)s", False),
    ]
    # The same second twice (the cached date), the next second, a time just
    # before a second ends, and one far away.
    times = [1_764_700_000.0, 1_764_700_000.999, 1_764_700_001.0005, 1_764_700_059.9999, 1_800_000_000.25]
    for created in times:
        for field in fields:
            expected = formatter.format(logs._access_record(created, field)) + "\n"
            assert fast.line(created, field) == expected
