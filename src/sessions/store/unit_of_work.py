"""The unit of work of a command: get -> decide -> save, with what makes it
safe to run in many threads and processes at once.

One attempt (``UnitOfWork``) reads aggregates through the application's
cache, lets the handler's aggregates decide, and saves every aggregate that
recorded something, together with the call's operation record, in one atomic
write. ``run`` makes the attempts:

- A save that collides with another writer's (the store's unique key on a
  stream's versions) wrote nothing: the command is decided again on fresh
  state, a bounded number of times, then refused as a conflict (ABORTED).
- The operation record is a stream of its own, named after the caller's
  idempotency key (or new): a collision or a lost connection during the save
  is resolved by looking it up, never reported as a conflict: found, the
  call's answer (this call's lost acknowledgement, or the first answer of a
  keyed retry); not found after an outage, the outage (UNAVAILABLE).
- A refusal decided on cached state is confirmed on fresh state before it is
  returned (what a collision would catch cannot be caught for a save that
  does not happen).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.persistence import IntegrityError

from sessions.domain.access import ActingFor
from sessions.domain.base import Aggregate
from sessions.domain.commands import Command
from sessions.domain.errors import DomainError, InvalidArgument
from sessions.domain.schedule import StaleState
from sessions.store.base import StoreApplication
from sessions.store.health import OUTAGE_ERRORS
from sessions.store.operations import OperationRecord, operation_id_for, request_digest

log = logging.getLogger("sessions.store.application")

MAX_ATTEMPTS = 12

A = TypeVar("A", bound=Aggregate)


class ConcurrencyConflict(Exception):
    """Optimistic-concurrency retries were exhausted (ABORTED)."""


@dataclass(frozen=True)
class Caller:
    principal: str
    idempotency_key: str = ""
    # Agent ids the caller may act for; None: not limited (admin, or no credentials).
    acting_for: ActingFor = None


@dataclass(frozen=True)
class Outcome:
    operation_id: str
    payload: bytes  # the stored answer (the serialized Operation)
    # The position token: the notification id of the call's last event (its
    # operation record's), at which its events and its sessions' rows
    # committed; 0 for an answer replayed from the store.
    position: int
    replayed: bool


class UnitOfWork:
    """One attempt of one command: the time it decides at, who asks, and the
    aggregates it read (those that recorded events are saved)."""

    def __init__(self, app: StoreApplication, caller: Caller, now: datetime):
        self.app = app
        self.caller = caller
        self.now = now
        self._seen: dict[str, Aggregate] = {}

    def get(self, kind: type[A], aggregate_id: str) -> A:
        aggregate = self.app.get(kind, aggregate_id)
        self._seen[aggregate.id] = aggregate
        return aggregate

    def get_or_none(self, kind: type[A], aggregate_id: str) -> A | None:
        aggregate = self.app.get_or_none(kind, aggregate_id)
        if aggregate is not None:
            self._seen[aggregate.id] = aggregate
        return aggregate

    def add(self, aggregate: A) -> A:
        """A new aggregate, saved with the rest."""
        self._seen[aggregate.id] = aggregate
        return aggregate

    def changed(self) -> list[Aggregate]:
        return [a for a in self._seen.values() if a.pending_events]


# (unit of work, command) -> the result the answer is rendered from
Handler = Callable[[UnitOfWork, Any], Any]
# Turns a result into the stored answer: (operation id, now, result) -> bytes.
Render = Callable[[str, datetime, Any], bytes]


def run(
    app: StoreApplication,
    handler: Handler,
    command: Command,
    caller: Caller,
    render: Render,
    *,
    session_id: str,
    fresh: bool = False,
) -> Outcome:
    """Run ``handler`` on ``command`` until its save commits (see above).
    ``session_id``: the session the call is about ("" for OpenSession: the
    one it opens); ``fresh``: decide on state caught up with the store from
    the first attempt (by default, on cached state first)."""
    operation_id = operation_id_for(caller.principal, caller.idempotency_key)
    request = request_digest(command)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        # A used key is not looked up first: the call's operation record
        # would collide in the save, which then writes nothing. The lookup
        # comes after a collision or a refusal, and answers with the first result.
        uow = UnitOfWork(app, caller, app.clock())
        try:
            with app.fresh_reads(fresh):
                result = handler(uow, command)
        except StaleState as e:
            log.debug("%s: %s; attempt %d of %d", command.method, e, attempt, MAX_ATTEMPTS)
            fresh = True
            continue
        except DomainError:
            if caller.idempotency_key and (
                stored := replay(app, operation_id, command.method, session_id, request)
            ) is not None:
                return stored  # refused now, but done before: the first answer
            if not fresh:  # refused on cached state: confirm on fresh state
                fresh = True
                continue
            raise
        record = OperationRecord(
            id=operation_id,
            method=command.method,
            session_id=session_id or _session_id_of(result),
            payload=render(operation_id, uow.now, result),
            principal=caller.principal,
            idempotency_key=caller.idempotency_key,
            timestamp=uow.now,
            request=request,
        )
        outcome = _save(app, uow, record, command.method, session_id)
        if outcome is not None:
            return outcome
        log.debug("%s: concurrent write, attempt %d of %d", command.method, attempt, MAX_ATTEMPTS)
        if fresh:
            # Jittered backoff, so that racing processes stop colliding.
            time.sleep(random.uniform(0, 0.002 * attempt))
        fresh = True  # (the first collision may only mean a stale cache)
    raise ConcurrencyConflict(
        f"{command.method}: gave up after {MAX_ATTEMPTS} conflicting concurrent writes; retry"
    )


def _save(
    app: StoreApplication, uow: UnitOfWork, record: OperationRecord, method: str, session_id: str
) -> Outcome | None:
    """Save the attempt; None when it collided with another writer."""
    try:
        position = app.commit(*uow.changed(), record)
    except IntegrityError:
        # Either another writer got there first (nothing of this call was
        # stored), or this very save committed and its acknowledgement was
        # lost, so that the library wrote it again and collided with itself;
        # or a keyed call was done before. The operation record says which.
        return replay(app, record.id, method, session_id, record.request)
    except OUTAGE_ERRORS:
        # The store went away during the save: it may have committed.
        # Look before answering; if the store cannot say, UNAVAILABLE.
        try:
            stored = replay(app, record.id, method, session_id, record.request)
        except Exception:  # noqa: BLE001 - the outcome stays unknown
            stored = None
        if stored is not None:
            return stored
        raise
    # The library caches every saved aggregate; an answer is read again
    # only by a keyed retry, so it gives its place to the sessions.
    app.uncache(record.id)
    return Outcome(record.id, record.payload, position, replayed=False)


def replay(
    app: StoreApplication, operation_id: str, method: str, session_id: str, request: str
) -> Outcome | None:
    """The stored answer of this call's operation, read from the store, if
    it was recorded (by a call with the same key, or by this call whose
    acknowledgement was lost). A key used for another request is refused
    rather than answered with that request's result (store.operations)."""
    with app.fresh_reads():
        previous = app.get_or_none(OperationRecord, operation_id)
    if previous is None:
        return None
    if previous.request:
        another = previous.request != request
    else:  # recorded before requests had digests
        another = previous.method != method or bool(session_id and previous.session_id != session_id)
    if another:
        raise InvalidArgument(
            "idempotency-key",
            f"was used for another request ({previous.method} on "
            f"{previous.session_id or 'a new session'}); use another key for another request",
        )
    return Outcome(operation_id, previous.payload, 0, replayed=True)


def _session_id_of(result: Any) -> str:
    session = getattr(result, "session", None)
    return session.id if session is not None else ""
