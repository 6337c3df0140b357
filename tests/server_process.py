"""Run `python -m sessions serve` as a real process, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.waiting import wait_until


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM, then up to ``timeout`` seconds to exit, then SIGKILL: the
    process's exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run_sessions(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sessions ARGS`` to its end, output captured; ``env`` on top
    of this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "sessions", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self, store_url: str, log_path: Path, *args: str, env: dict[str, str] | None = None
    ):
        """``env``: variables added to this process's environment for the server."""
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessions", "serve", "--listen", self.target, "--store", store_url, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
        )
        self.channel = grpc.insecure_channel(self.target)

    def wait_serving(self, timeout: float = 30) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)

        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                return False
            return status == health_pb2.HealthCheckResponse.SERVING

        if not wait_until(serving, timeout, interval=0.05):
            raise AssertionError(f"server not SERVING within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15) -> int:
        self.channel.close()
        code = stop_process(self.proc, timeout)
        self._log.close()
        return code
