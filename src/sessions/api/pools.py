"""Which executor runs a method's calls (grpcio's per-method hook).

grpcio runs a call in the executor named by its behavior's (the function
its handler calls) ``experimental_thread_pool`` attribute, when it is a
ThreadPoolExecutor, and in the server's pool otherwise
(``grpc._server._select_thread_pool_for_behavior``). The server uses it to
serve reads on a few threads of their own (sessions.server, --read-threads);
a wrapper around a behavior (metrics, access control) keeps its pool with
``same_pool``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

_POOL = "experimental_thread_pool"

Behavior = TypeVar("Behavior", bound=Callable[..., Any])


def run_in(behavior: Behavior, pool: futures.ThreadPoolExecutor | None) -> Behavior:
    """``behavior``'s calls run in ``pool`` (None: the server's pool)."""
    if pool is not None:
        setattr(behavior, _POOL, pool)
    return behavior


def pool_of(behavior: Callable[..., Any] | None) -> futures.ThreadPoolExecutor | None:
    pool = getattr(behavior, _POOL, None)
    return pool if isinstance(pool, futures.ThreadPoolExecutor) else None


def same_pool(wrapper: Behavior, behavior: Callable[..., Any] | None) -> Behavior:
    """``wrapper``, a behavior that calls ``behavior``, runs in its pool."""
    return run_in(wrapper, pool_of(behavior))
