"""Wire compatibility, proven with the official Yandex Cloud client.

The public SDK (`yandexcloud` on PyPI) ships generated stubs for
SynchronizationSessionService and OperationService. This test installs it into
a virtualenv of its own (cached under `.cache/compat-venv` at the repo root),
starts our server as a real subprocess, and runs `client_script.py` with that
venv's Python. The client never sees our code, only the socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CLIENT_SCRIPT = HERE / "client_script.py"
VENV_DIR = REPO_ROOT / ".cache" / "compat-venv"
VENV_KEY_FILE = VENV_DIR / "compat-key.txt"

# What goes into the client's venv. Changing this list rebuilds the cached venv.
# The stubs in yandexcloud 0.413.0 are generated for protobuf>=6.31.1 and
# grpcio>=1.78.0 (checked at import); the package itself asks protobuf<7.
OFFICIAL_CLIENT_REQUIREMENTS = ("yandexcloud==0.413.0",)
STUB_MODULES = (
    "yandex.cloud.organizationmanager.v1.idp.synchronization_session_service_pb2",
    "yandex.cloud.organizationmanager.v1.idp.synchronization_session_service_pb2_grpc",
    "yandex.cloud.operation.operation_service_pb2_grpc",
)

SERVER_START_TIMEOUT_S = float(os.environ.get("COMPAT_SERVER_START_TIMEOUT", "60"))
SERVER_STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 0.1

pytestmark = pytest.mark.compat


# --------------------------------------------------------------------------- the official client's venv


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_key() -> str:
    # The base interpreter matters too: a venv is tied to the Python that made it.
    material = "\n".join(
        [
            *OFFICIAL_CLIENT_REQUIREMENTS,
            f"python={sys.version}",
            f"base={os.path.realpath(getattr(sys, '_base_executable', sys.executable))}",
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _stubs_import(python: Path) -> subprocess.CompletedProcess:
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    return subprocess.run(
        [str(python), "-I", "-c", code, *STUB_MODULES],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Serialize venv builds between concurrent pytest processes (xdist, parallel CI jobs)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking, builds are rare anyway
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_venv(key: str) -> None:
    shutil.rmtree(VENV_DIR, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.fail(
            f"could not create the compat venv at {VENV_DIR} with `{sys.executable} -m venv`:\n"
            f"{_tail(made.stdout + made.stderr)}",
            pytrace=False,
        )
    python = _venv_python(VENV_DIR)
    try:
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *OFFICIAL_CLIENT_REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        pytest.fail(
            f"pip install {' '.join(OFFICIAL_CLIENT_REQUIREMENTS)} did not finish in {PIP_TIMEOUT_S:.0f}s; "
            "is PyPI reachable from this machine?",
            pytrace=False,
        )
    if pip.returncode != 0:
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        # No skip on purpose: without the official client this proof is missing, and CI must say so.
        pytest.fail(
            f"could not install the official Yandex Cloud client ({' '.join(OFFICIAL_CLIENT_REQUIREMENTS)}) "
            f"into {VENV_DIR}: pip exited {pip.returncode}. This test needs PyPI (network) the first time; "
            f"afterwards the venv is cached.\n--- pip output (tail) ---\n{_tail(pip.stdout + pip.stderr)}",
            pytrace=False,
        )
    imported = _stubs_import(python)
    if imported.returncode != 0:
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        pytest.fail(
            f"{' '.join(OFFICIAL_CLIENT_REQUIREMENTS)} installed, but its stubs do not import:\n"
            f"{_tail(imported.stderr)}",
            pytrace=False,
        )
    VENV_KEY_FILE.write_text(key + "\n")


@pytest.fixture(scope="session")
def official_client_python() -> Path:
    """Python of a venv holding the official client; built once, then reused while the key matches."""
    key = _venv_key()
    with _exclusive(VENV_DIR.parent / "compat-venv.lock"):
        python = _venv_python(VENV_DIR)
        cached = (
            VENV_KEY_FILE.is_file()
            and VENV_KEY_FILE.read_text().strip() == key
            and python.exists()
            and _stubs_import(python).returncode == 0
        )
        if not cached:
            _build_venv(key)
    return python


# --------------------------------------------------------------------------- our server as a subprocess


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


HEALTH_SERVICES = ("", "yandex.cloud.organizationmanager.v1.idp.SynchronizationSessionService")


def _health_status(target: str) -> str | None:
    """grpc.health.v1.Health/Check over raw bytes: no generated health stubs needed here.

    Asks for the whole server (service ""), then for the public service by
    name; returns the first status name answered, or None while nothing answers.
    """
    import grpc

    statuses = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")  # bytes in, bytes out
        for service in HEALTH_SERVICES:
            name = service.encode()
            # HealthCheckRequest{1: service}; an empty name encodes as no bytes at all.
            request = b"\x0a" + bytes([len(name)]) + name if name else b""
            try:
                reply = check(request, timeout=1.0)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # this name is not registered; try the next one
                return None
            return statuses.get(_varint_field_1(reply), "UNKNOWN")
    return None


def _varint_field_1(data: bytes) -> int:
    """Value of varint field 1 (HealthCheckResponse.status); 0 when absent."""
    i, value = 0, 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _read_varint(data, i)
            if field == 1:
                value = v
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, target: str, log_path: Path):
        self.proc = proc
        self.target = target
        self.log_path = log_path

    def log_tail(self) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), 60)
        except OSError:
            return "(no server log)"


@pytest.fixture
def sessions_server(tmp_path: Path):
    """Our server (`python -m sessions serve`) on a free loopback port with a throwaway store."""
    port = _free_port()
    target = f"127.0.0.1:{port}"
    env = dict(os.environ)
    src = REPO_ROOT / "src"
    if src.is_dir():  # also works before `pip install -e .`
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env.pop("SESSIONS_LISTEN", None)
    env.pop("SESSIONS_STORE", None)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sessions", "serve", "--listen", target, "--store", "memory://"],
            cwd=tmp_path,  # anything the server writes by default lands here, not in the repo
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, target, log_path)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        if proc.poll() is None:  # the test did not stop it (it failed early): don't leak it
            proc.kill()
            proc.wait(timeout=10)


def _wait_until_ready(server: ServerProcess) -> None:
    from tests.waiting import wait_until

    host, port = server.target.rsplit(":", 1)
    progress = {"stage": "port", "health": None}

    def ready() -> bool:
        if server.proc.poll() is not None:
            pytest.fail(
                f"the server exited with code {server.proc.returncode} before it was ready "
                f"(waiting for {progress['stage']}).\n--- server log ---\n{server.log_tail()}",
                pytrace=False,
            )
        if progress["stage"] == "port" and _port_accepts(host, int(port)):
            progress["stage"] = "health"
        if progress["stage"] == "health":
            progress["health"] = _health_status(server.target)
            return progress["health"] == "SERVING"
        return False

    if not wait_until(ready, SERVER_START_TIMEOUT_S, interval=POLL_INTERVAL_S):
        pytest.fail(
            f"the server at {server.target} was not ready within {SERVER_START_TIMEOUT_S:.0f}s "
            f"(stuck at: {progress['stage']}; last health status: {progress['health']}).\n"
            f"--- server log ---\n{server.log_tail()}",
            pytrace=False,
        )


# --------------------------------------------------------------------------- the test


def test_official_client_drives_the_whole_session_lifecycle(official_client_python, sessions_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        run = subprocess.run(
            # -I: isolated mode, so nothing of ours (PYTHONPATH, cwd, user site) leaks into the client.
            [str(official_client_python), "-I", str(CLIENT_SCRIPT), "--target", sessions_server.target],
            capture_output=True,
            text=True,
            env=env,
            cwd=HERE,
            timeout=CLIENT_TIMEOUT_S,
        )
    if run is None:
        pytest.fail(
            f"client_script.py did not finish in {CLIENT_TIMEOUT_S:.0f}s against {sessions_server.target}"
            f"\n--- server log ---\n{sessions_server.log_tail()}",
            pytrace=False,
        )

    summary_lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(summary_lines[-1]) if summary_lines else None
    assert run.returncode == 0, (
        f"the official client failed against our server (exit {run.returncode}):\n"
        f"{run.stderr.strip()}\nsummary: {summary}\n--- server log ---\n{sessions_server.log_tail()}"
    )
    assert summary and summary.get("ok") is True, f"no success summary from the client: {run.stdout!r}"
    assert summary["versions"]["yandexcloud"] == OFFICIAL_CLIENT_REQUIREMENTS[0].split("==")[1]

    proc = sessions_server.proc
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(
            f"the server did not exit within {SERVER_STOP_TIMEOUT_S:.0f}s of SIGTERM.\n"
            f"--- server log ---\n{sessions_server.log_tail()}",
            pytrace=False,
        )
    # docs/design.md promises a graceful shutdown: the server handles SIGTERM and exits 0
    # (a bare -15 would mean it died of the signal without stopping its parts).
    assert code == 0, (
        f"the server exited with code {code} on SIGTERM.\n--- server log ---\n{sessions_server.log_tail()}"
    )
