"""A bounded gRPC load generator for 127.0.0.1: grpc.aio clients in one or more
processes, a fixed duration, N calls in flight per process, latency
percentiles and QPS.

Each process (multiprocessing, "spawn") opens one grpc.aio channel to the
target and runs ``concurrency`` tasks; each task sends a call, waits for the
answer and sends the next (a closed loop: at most ``concurrency`` calls in
flight per process). Requests and responses travel as raw bytes (the method
is called without serializers), so the client spends no time on protobuf
and the same client measures any server of the same method. With
``parse=True`` (``--parse``) each response is parsed into its generated
message class, as a real client's stub does: the figure then includes the
client's protobuf cost, as the service's users see it. The processes
connect and warm up first, then start together (a barrier); each stops
sending at its deadline, and the calls still in flight are waited for and
counted. Nothing runs unbounded: the duration, and with ``cycle=False`` the
list of requests (each sent once), bound every run.

Requests are given as a list of serialized messages; task ``g`` of ``W`` in
all (over every process) sends ``requests[g]``, ``requests[g + W]``, ... and
starts over at its first one when ``cycle`` (so a list of W requests gives
every task its own request: one session per simulated agent).

Comparing two cases call by call: ``target`` may be a list of servers and
``target_of[i]`` says which one request ``i`` goes to; ``labels[i]`` names
its case, and the result then has the percentiles of each case apart
(``result.by_label``). With one task and requests alternating between two
cases, both are measured in the same moments, so load from other work on the
machine weighs on both alike: a much steadier ratio than two runs in turn.

Library use (what bench/suite.py does)::

    result = run("127.0.0.1:50051", method_path("GetSession"), [request_bytes],
                 duration=5, concurrency=32, processes=1)
    result.qps, result.p50, result.p95, result.p99   # calls/s, seconds

Command line::

    .venv/bin/python bench/load.py --target 127.0.0.1:50051 --session-id SES \
        [--method GetSession] [--duration 5] [--concurrency 32] [--processes 1] [--parse]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

WARMUP_CALLS = 20  # per task, before the barrier: connection, first-call costs
CALL_TIMEOUT = 30.0


def response_parser(method: str) -> Any:
    """The generated message class's ``FromString`` for the response of
    ``method`` (a ``/package.Service/Method`` path), from the service's
    descriptor: what the generated stub deserializes with."""
    from google.protobuf import message_factory

    from sessions.api.protos import service_pb2

    service_name, _, name = method.strip("/").rpartition("/")
    for service in service_pb2.DESCRIPTOR.services_by_name.values():
        if service.full_name == service_name and name in service.methods_by_name:
            return message_factory.GetMessageClass(service.methods_by_name[name].output_type).FromString
    raise ValueError(f"no method {method} in the sessions service")


def method_path(method: str, service: str | None = None) -> str:
    """``/package.Service/Method`` of the sessions service (or ``service``)."""
    if service is None:
        from sessions.api.protos import SESSION_SERVICE

        service = SESSION_SERVICE
    return f"/{service}/{method}"


@dataclass
class LoadResult:
    calls: int  # answered OK
    errors: int
    seconds: float  # the longest process's measured window
    qps: float  # OK calls per second, summed over the processes
    p50: float  # seconds
    p95: float
    p99: float
    mean: float
    max: float
    concurrency: int
    processes: int
    error_codes: dict[str, int] = field(default_factory=dict)
    by_label: dict[str, LoadResult] = field(default_factory=dict)

    def describe(self) -> str:
        text = (
            f"{self.qps:,.0f} calls/s; p50 {self.p50 * 1e3:.3f} p95 {self.p95 * 1e3:.3f} "
            f"p99 {self.p99 * 1e3:.3f} ms; {self.calls} calls in {self.seconds:.1f}s, "
            f"{self.processes}x{self.concurrency} in flight"
        )
        if self.errors:
            text += f"; {self.errors} errors {self.error_codes}"
        return text


def _quantiles(samples: Any) -> tuple[float, float, float, float, float]:
    if not samples:
        return (float("nan"),) * 5
    ordered = sorted(samples)
    if len(ordered) == 1:
        v = ordered[0]
        return v, v, v, v, v
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98], statistics.fmean(ordered), ordered[-1]


# --- one process ----------------------------------------------------------------------------


async def _drive(
    index: int,
    processes: int,
    targets: list[str],
    method: str,
    requests: list[bytes],
    target_of: list[int],
    labels: list[int],
    duration: float,
    concurrency: int,
    cycle: bool,
    warmup: bool,
    barrier: Any,
    parse: bool = False,
) -> dict[str, Any]:
    import grpc

    # (a subchannel pool of each channel's own: channels to one target are
    # connections of their own, which SO_REUSEPORT workers share out)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(t, options=options) for t in targets]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
        # bytes in; bytes out, or (parse) the response message, as a generated stub returns it
        deserializer = response_parser(method) if parse else None
        calls = [channel.unary_unary(method, response_deserializer=deserializer) for channel in channels]
        workers = processes * concurrency
        if warmup:
            async def warm() -> None:
                for _ in range(WARMUP_CALLS):
                    for first in {t: r for r, t in enumerate(target_of)}.values():
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await calls[target_of[first]](requests[first], timeout=CALL_TIMEOUT)

            await asyncio.gather(*(warm() for _ in range(concurrency)))
        barrier.wait(120)  # nothing else runs on this loop yet: blocking is fine
        latencies = [array("d") for _ in range(max(labels) + 1)]
        errors: dict[str, int] = {}
        began = time.perf_counter()
        deadline = began + duration

        async def task(slot: int) -> None:
            g = index * concurrency + slot  # this task's number over every process
            numbers = range(len(requests))
            mine = list(numbers[g::workers]) if len(requests) > workers else [g % len(requests)]
            if not mine:
                return
            i = 0
            clock = time.perf_counter
            while clock() < deadline:
                if i == len(mine):
                    if not cycle:
                        return
                    i = 0
                r = mine[i]
                i += 1
                request, call, samples = requests[r], calls[target_of[r]], latencies[labels[r]]
                started = clock()
                try:
                    await call(request, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as e:
                    name = e.code().name
                    errors[name] = errors.get(name, 0) + 1
                    continue
                samples.append(clock() - started)

        await asyncio.gather(*(task(slot) for slot in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        for channel in channels:
            await channel.close()
    return {"latencies": [a.tobytes() for a in latencies], "errors": errors, "seconds": elapsed}


def _process(index: int, processes: int, targets: list[str], method: str, requests: list[bytes],
             target_of: list[int], labels: list[int], duration: float, concurrency: int, cycle: bool,
             warmup: bool, barrier: Any, out: Any, parse: bool = False) -> None:
    try:
        result = asyncio.run(
            _drive(index, processes, targets, method, requests, target_of, labels, duration,
                   concurrency, cycle, warmup, barrier, parse)
        )
    except BaseException as e:  # report, so that the parent does not wait forever
        with contextlib.suppress(Exception):
            barrier.abort()
        out.put((index, {"failed": f"{type(e).__name__}: {e}"}))
        return
    out.put((index, result))


# --- the run ----------------------------------------------------------------------------------


def run(
    target: str | list[str],
    method: str,
    requests: list[bytes],
    *,
    duration: float,
    concurrency: int = 1,
    processes: int = 1,
    cycle: bool = True,
    warmup: bool = True,
    target_of: list[int] | None = None,
    labels: list[str] | None = None,
    parse: bool = False,
) -> LoadResult:
    """Drive ``method`` on ``target`` for ``duration`` seconds (see the module's doc)."""
    if not requests:
        raise ValueError("no requests")
    targets = [target] if isinstance(target, str) else list(target)
    target_of = target_of or [0] * len(requests)
    names = sorted(set(labels), key=labels.index) if labels else [""]
    label_numbers = [names.index(label) for label in labels] if labels else [0] * len(requests)
    if len(target_of) != len(requests) or len(label_numbers) != len(requests):
        raise ValueError("target_of and labels need one item per request")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=_process,
            args=(i, processes, targets, method, requests, target_of, label_numbers, duration, concurrency,
                  cycle, warmup, barrier, out, parse),
            daemon=True,
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    results: dict[int, dict[str, Any]] = {}
    try:
        with contextlib.suppress(Exception):  # a child failed before the start: its report says why
            barrier.wait(180)
        limit = time.monotonic() + duration + CALL_TIMEOUT + 60
        while len(results) < processes:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise RuntimeError("load generator: a process did not report in time")
            index, result = out.get(timeout=remaining)
            results[index] = result
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
    failures = [r["failed"] for r in results.values() if "failed" in r]
    if failures:
        raise RuntimeError(f"load generator failed: {failures[0]}")
    errors: dict[str, int] = {}
    for r in results.values():
        for name, n in r["errors"].items():
            errors[name] = errors.get(name, 0) + n

    def summary(numbers: list[int]) -> LoadResult:
        latencies = array("d")
        qps = 0.0
        for r in results.values():
            mine = array("d")
            for number in numbers:
                mine.frombytes(r["latencies"][number])
            latencies.extend(mine)
            qps += len(mine) / r["seconds"]
        p50, p95, p99, mean, worst = _quantiles(latencies)
        return LoadResult(
            calls=len(latencies),
            errors=sum(errors.values()),
            seconds=max(r["seconds"] for r in results.values()),
            qps=qps,
            p50=p50,
            p95=p95,
            p99=p99,
            mean=mean,
            max=worst,
            concurrency=concurrency,
            processes=processes,
            error_codes=errors,
        )

    overall = summary(list(range(len(names))))
    if labels:
        overall.by_label = {name: summary([n]) for n, name in enumerate(names)}
    return overall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server")
    parser.add_argument("--method", default="GetSession", help="a method of SynchronizationSessionService (GetSession)")
    parser.add_argument("--session-id", action="append", required=True, help="session(s) to ask for; repeatable")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight per process (default 32)")
    parser.add_argument("--processes", type=int, default=1, help="client processes (default 1)")
    parser.add_argument("--parse", action="store_true",
                        help="parse each response into its generated message, as a real client's stub does")
    args = parser.parse_args()
    from sessions.api.protos import service_pb2

    if args.method == "GetSession":
        requests = [service_pb2.GetSessionRequest(session_id=s).SerializeToString() for s in args.session_id]
    elif args.method == "Heartbeat":
        requests = [service_pb2.HeartbeatRequest(session_id=s).SerializeToString() for s in args.session_id]
    else:
        raise SystemExit("--method: GetSession or Heartbeat from the command line; use run() for others")
    result = run(
        args.target,
        method_path(args.method),
        requests,
        duration=args.duration,
        concurrency=args.concurrency,
        processes=args.processes,
        parse=args.parse,
    )
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
