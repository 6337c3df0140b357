"""The CLI works without the `cli` extra (rich): plain output, no bars."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.audit.audit_support import build_store

pytestmark = pytest.mark.slow

# `sessions`, in a process where importing rich fails as if it were not installed.
WITHOUT_RICH = (
    "import runpy, sys; sys.modules['rich'] = None; sys.argv[0] = 'sessions'; "
    "runpy.run_module('sessions', run_name='__main__')"
)


def sessions(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_RICH, *args], capture_output=True, text=True, timeout=120
    )


def test_every_command_with_a_bar_or_a_table_runs_without_rich(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    built = build_store(url)
    built.app.close()
    history = sessions("history", built.closed, "--store", url)
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[1].split("\t")[0] == "ver"
    assert len(history.stdout.splitlines()) == 2 + 5  # title, header, five events
    verified = sessions("audit", "verify", "--all", "--store", url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "intact: every chain verifies"
    anchored = sessions("audit", "anchor", "--out", str(tmp_path / "heads.json"), "--store", url)
    assert anchored.returncode == 0, anchored.stderr
    rebuilt = sessions("projections", "rebuild", "--store", url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    status = sessions("projections", "status", "--store", url)
    assert status.returncode == 0, status.stderr
    exported = sessions("events", "export", "--out", str(tmp_path / "log.jsonl.gz"), "--store", url)
    assert exported.returncode == 0, exported.stderr
    for run in (history, verified, anchored, rebuilt, status, exported):
        assert "Traceback" not in run.stderr
