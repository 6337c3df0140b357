"""A bounded HTTP/1.1 load generator for 127.0.0.1, the REST twin of load.py.

One process, one asyncio loop, ``concurrency`` tasks each on its own
keep-alive connection: a task sends a GET, reads the answer (status line,
headers, Content-Length body) and sends the next (a closed loop). Requests
are written as raw bytes over asyncio streams, so the client spends about
what load.py's raw-bytes gRPC client spends, and the two measure servers,
not clients. Bounded by ``duration``; the result is a load.LoadResult.

    result = run("127.0.0.1", 8080, ["/path/a", "/path/b"], duration=3, concurrency=16)
"""

from __future__ import annotations

import asyncio
import time
from array import array

from load import CALL_TIMEOUT, WARMUP_CALLS, LoadResult, _quantiles


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _drive(host: str, port: int, paths: list[str], duration: float, concurrency: int) -> LoadResult:
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode() for p in paths]
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    try:
        for reader, writer in connections:  # warm up: connection and first-call costs
            for _ in range(WARMUP_CALLS):
                await _call(reader, writer, requests[0])
        latencies = array("d")
        errors: dict[str, int] = {}
        began = time.perf_counter()
        deadline = began + duration

        async def task(slot: int) -> None:
            reader, writer = connections[slot]
            mine = requests[slot::concurrency] or [requests[slot % len(requests)]]
            i = 0
            clock = time.perf_counter
            while clock() < deadline:
                request = mine[i % len(mine)]
                i += 1
                started = clock()
                status = await asyncio.wait_for(_call(reader, writer, request), CALL_TIMEOUT)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    continue
                latencies.append(clock() - started)

        await asyncio.gather(*(task(slot) for slot in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        for _, writer in connections:
            writer.close()
    p50, p95, p99, mean, worst = _quantiles(latencies)
    return LoadResult(
        calls=len(latencies), errors=sum(errors.values()), seconds=elapsed, qps=len(latencies) / elapsed,
        p50=p50, p95=p95, p99=p99, mean=mean, max=worst, concurrency=concurrency, processes=1, error_codes=errors,
    )


def run(host: str, port: int, paths: list[str], *, duration: float, concurrency: int = 1) -> LoadResult:
    """GET ``paths`` (task ``i`` takes every ``concurrency``-th) for ``duration`` seconds."""
    return asyncio.run(_drive(host, port, paths, duration, concurrency))
