"""Rebuild throughput against the library's own decoded read rate.

Writes a log the way the API does (commands with their operation records:
open, reports, heartbeats, close, over many containers), then, on the same
data and in one run:
  (1) the library's decoded read rate: select_notifications + mapping of
      every event (the baseline of issue 6 and 8);
  (2) `rebuild()`: the whole log folded into new tables, taking over;
and prints both rates and their ratio. Figures only; asserts nothing.

  .venv/bin/python bench/rebuild.py [--sessions N] [--backends sqlite,postgresql]
  .venv/bin/python bench/rebuild.py --store URL   # a store of your own, kept

With --store, the log is written into that store only if it has none yet,
and the store is left as it is afterwards, so that later runs skip the
setup (minutes on PostgreSQL) and fold the same log again.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sessions.api.operations import renderer
from sessions.domain.commands import CloseSession, Heartbeat, OpenSession, ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.projection.rebuild import rebuild
from sessions.store.application import Caller, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url

POLICY = Policy.from_seconds(sync_interval=0, session_ttl=3600, heartbeat_grace=600)
AGENT = Caller("agent:bench")


from projector_and_writes import library_mapper, store  # noqa: E402  (one way to make a throwaway store)


def write_log(url: str, sessions: int) -> int:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    app = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    rng = random.Random(7)
    ids: list[str] = []

    def capture(method: str):  # type: ignore[no-untyped-def]
        render = renderer(method, AGENT.principal)

        def run(operation_id, now, result):  # type: ignore[no-untyped-def]
            ids.append(result.session.id)
            return render(operation_id, now, result)

        return run

    for i in range(sessions):
        app.execute(
            OpenSession(f"container-{i % 500}-{i}", "agent", SessionType.AD_SYNC), AGENT, capture("OpenSession")
        )
        sid = ids[-1]
        for _ in range(rng.randint(4, 12)):
            clock.advance(1)
            if rng.random() < 0.25:
                app.execute(Heartbeat(sid), AGENT, renderer("Heartbeat", AGENT.principal))
            else:
                entries = [
                    ProgressEntry(t, tuple(
                        ChangeCount(c, rng.randint(0, 500), rng.randint(0, 3))
                        for c in rng.sample(list(ChangeType), rng.randint(1, 4))
                    ))
                    for t in rng.sample(list(RelatedObjectType), rng.randint(1, 3))
                ]
                app.execute(ReportProgress(sid, entries), AGENT, renderer("ReportSessionProgress", AGENT.principal))
        app.execute(CloseSession(sid, rng.random() < 0.1, ""), AGENT, renderer("CloseSession", AGENT.principal))
        clock.advance(1)
    head = app.recorder.max_notification_id() or 0
    app.close()
    return head


def decoded_read_rate(app: SessionsApplication, batch: int = 5000) -> float:
    """The library's decoded read: its own mapper and JSONTranscoder (with the
    store's transcodings), whatever codec the store itself uses."""
    mapper = library_mapper(app)
    began = time.perf_counter()
    position = count = 0
    while True:
        notifications = app.recorder.select_notifications(start=position, limit=batch, inclusive_of_start=False)
        if not notifications:
            break
        for n in notifications:
            mapper.to_domain_event(n)
        count += len(notifications)
        position = notifications[-1].id
    return count / (time.perf_counter() - began)


@contextmanager
def kept(url: str) -> Iterator[str]:
    yield url


def existing_head(url: str) -> int:
    app = SessionsApplication(parse_store_url(url), policy=POLICY)
    try:
        return app.recorder.max_notification_id() or 0
    finally:
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=os.environ.get("SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each rate")
    parser.add_argument("--store", help="use (and keep) this store; its log is written only if it has none")
    args = parser.parse_args()
    rows = []
    backends = [parse_store_url(args.store).backend] if args.store else args.backends.split(",")
    for backend in backends:
        with kept(args.store) if args.store else store(backend, args.postgres) as url:
            began = time.perf_counter()
            head = existing_head(url) or write_log(url, args.sessions)
            setup = time.perf_counter() - began
            app = SessionsApplication(parse_store_url(url), policy=POLICY)
            try:
                reads = [decoded_read_rate(app) for _ in range(args.repeat)]
                folds = []
                for _ in range(args.repeat):
                    result = rebuild(app)
                    folds.append(result.events / result.seconds)
            finally:
                app.close()
            print(f"{backend}: read {[round(r) for r in reads]} events/s, rebuild {[round(f) for f in folds]} events/s")
            read, fold = max(reads), max(folds)
            rows.append((backend, head, setup, read, fold, fold / read))
    sessions = "the store's log" if args.store else f"{args.sessions} sessions"
    print(f"\nrebuild vs decoded read; {sessions}; best of {args.repeat}; "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}")
    print(f"{'backend':<11}{'events':>9}{'setup s':>9}{'read ev/s':>12}{'rebuild ev/s':>14}{'ratio':>8}")
    for backend, head, setup, read, fold, ratio in rows:
        print(f"{backend:<11}{head:>9}{setup:>9.1f}{read:>12,.0f}{fold:>14,.0f}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
