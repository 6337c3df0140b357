"""A load generator in C for unary gRPC calls: nghttp2's ``h2load``.

gRPC over HTTP/2 is a POST of a length-prefixed message with
``content-type: application/grpc``; h2load sends the same one over and over
on C connections with M streams each, from one native thread, and spends a
small fraction of the CPU the Python client (bench/load.py) does per call
(measured here: about a tenth). On a 2-core machine that matters when the
servers measured want both cores (``serve --workers 2``): the Python
client's own share of the CPU caps what it can show.

What it cannot do: send a different request per call (one body for all),
read gRPC trailers (it counts HTTP statuses, and gRPC answers errors with
HTTP 200 and a ``grpc-status`` trailer). So ``run`` first makes the same
call once with grpcio and refuses to measure unless it answers OK, and it is
used for reads only, whose answer to one request does not change while it
runs (GetSession of one stored session).

Install: ``apt install nghttp2-client``. ``available()`` says whether it is
on the PATH; the suite falls back to bench/load.py alone without it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile

import grpc
from load import LoadResult

WARMUP_SECONDS = 1


def available() -> bool:
    return shutil.which("h2load") is not None


def check_ok(target: str, method: str, request: bytes) -> None:
    """One call of the same request through grpcio: it must answer OK."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out
        call(request, timeout=10)  # raises grpc.RpcError unless OK


def run(target: str, method: str, request: bytes, *, duration: float, connections: int, streams: int) -> LoadResult:
    """``connections`` x ``streams`` calls in flight for ``duration`` seconds
    (after one second of warm-up). ``calls`` counts answers with HTTP 2xx;
    ``seconds`` is the measured window; the client's CPU is not in it."""
    check_ok(target, method, request)
    with tempfile.NamedTemporaryFile(suffix=".grpc") as body:
        body.write(b"\x00" + struct.pack(">I", len(request)) + request)
        body.flush()
        out = subprocess.run(
            [
                "h2load", "-D", f"{duration:g}", "--warm-up-time", str(WARMUP_SECONDS),
                "-c", str(connections), "-m", str(streams), "-t", "1", "-d", body.name,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://{target}{method}",
            ],
            capture_output=True, text=True, timeout=duration + WARMUP_SECONDS + 60, env={**os.environ, "LC_ALL": "C"},
        )
    text = out.stdout
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    requests = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text
    )
    timing = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if out.returncode != 0 or not (finished and statuses and requests):
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{text[-1500:]}\n{out.stderr[-1500:]}")
    ok = int(statuses.group(1))
    failed = int(requests.group(2)) + int(requests.group(3)) + ok - int(requests.group(1))
    seconds = float(finished.group(1))
    mean = _seconds(timing.group(3)) if timing else float("nan")
    most = _seconds(timing.group(2)) if timing else float("nan")
    nan = float("nan")
    return LoadResult(
        calls=ok, errors=max(failed, 0), seconds=seconds, qps=ok / seconds if seconds else 0.0,
        p50=nan, p95=nan, p99=nan, mean=mean, max=most, concurrency=connections * streams, processes=1,
        error_codes={"http-non-2xx": failed} if failed > 0 else {},
    )


def _seconds(text: str) -> float:
    """h2load's durations: ``812us``, ``1.25ms``, ``2.01s``."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]
