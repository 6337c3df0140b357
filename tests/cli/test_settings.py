"""Every flag has its SESSIONS_* variable; bad values, from either, are one
line and exit 2. Through the real command, in processes of their own."""

from __future__ import annotations

import pytest

from tests.server_process import ServerProcess, run_sessions


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SESSIONS_GRACE", "soon", "not a number of seconds"),
        ("SESSIONS_THREADS", "0", "must be 1 or more"),
        ("SESSIONS_READ_THREADS", "-1", "must be 0 or more"),
        ("SESSIONS_DEADLINE_INTERVAL", "-1", "not a number of seconds"),
        ("SESSIONS_NO_PROJECTOR", "maybe", "not a yes or no"),
        ("SESSIONS_MAX_CONCURRENT_RPCS", "many", "not a whole number"),
        ("SESSIONS_SESSION_TTL", "ten minutes", "not a number of seconds"),
        ("SESSIONS_LOG_FORMAT", "xml", "one of text, json"),
        ("SESSIONS_ACCESS_LOG", "sometimes", "one of on, errors, off"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_exit_2(variable: str, value: str, says: str) -> None:
    run = run_sessions("serve", "--store", "memory://", env={variable: value})
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"sessions: {variable}={value!r}: {says}"), line


def test_a_bad_variable_of_another_command_does_not_matter() -> None:
    """Only the flags of the command that runs are read."""
    run = run_sessions("auth", "list", env={"SESSIONS_GRACE": "soon", "SESSIONS_AUTH_FILE": ""})
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["sessions: give --auth-file FILE or set SESSIONS_AUTH_FILE"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("serve", "--threads", "none"), "argument --threads: 'none': not a whole number"),
        (("serve", "--grace", "-2"), "argument --grace: '-2': not a number of seconds (0 or more)"),
        (("project", "--batch-size", "0"), "argument --batch-size: '0': must be 1 or more"),
        (("health", "--timeout", "x"), "argument --timeout: 'x': not a number of seconds"),
        (("serve", "--log-format", "xml"), "argument --log-format: 'xml': one of text, json"),
    ],
)
def test_a_bad_flag_value_is_one_line_and_exit_2(args: tuple[str, ...], says: str) -> None:
    run = run_sessions(*args, "--store", "memory://") if args[0] != "health" else run_sessions(*args)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"sessions {args[0]}: {says}"), line


@pytest.mark.slow
def test_a_server_configured_by_variables_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SESSIONS_LISTEN, SESSIONS_THREADS, SESSIONS_READ_THREADS,
    SESSIONS_NO_DEADLINES take effect,
    and a flag given beside its variable wins; `sessions health` finds the
    server through SESSIONS_TARGET."""
    server = ServerProcess(
        "memory://",
        tmp_path / "server.log",
        "--grace", "2", "--log-format", "text",  # (the logging options go after the command too)
        env={"SESSIONS_THREADS": "3", "SESSIONS_READ_THREADS": "2", "SESSIONS_NO_DEADLINES": "yes",
             "SESSIONS_GRACE": "7", "SESSIONS_LOG_FORMAT": "json"},
    )
    try:
        server.wait_serving()
        asked = run_sessions("health", env={"SESSIONS_TARGET": server.target})
        assert asked.returncode == 0, asked.stderr
        assert asked.stdout.strip() == f"{server.target}: SERVING"
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text()
    assert "threads=3" in log
    assert "read_threads=2" in log
    assert "no_deadlines=True" in log
    assert "grace=2.0" in log and "grace=7" not in log
    assert "log_format=text" in log and not log.startswith("{")
    assert "deadlines: sweeping" not in log
