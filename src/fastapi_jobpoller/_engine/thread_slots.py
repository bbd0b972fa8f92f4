"""Thread slots: how many `def` calls run at once, and which threads are stuck.

Calls go straight to the pool's queue, first come first served; a thread that finishes a
call takes the next one itself, with no turn of the event loop in between. The pool has
`thread_pool_size` threads. A `def` call cannot be stopped: one that outlives
`attempt_timeout` keeps its thread and is stuck. For the first `max_stuck_threads` stuck
calls the pool grows by one thread, so a function that hangs cannot starve the others;
past that cap a stuck call keeps its thread until it returns. A call's timeout counts
from when a thread starts it, so calls queued behind stuck ones never count as timed
out; one that no thread starts within `attempt_timeout` is not run (`NoFreeThreadError`).
"""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from .threads import DaemonThreadPool

__all__ = ["NoFreeThreadError", "ThreadCall", "ThreadSlots"]

# Guards the hand-over between a call finishing on its thread and the loop marking it
# stuck: held for a few instructions, by two parties at most.
_STUCK_LOCK = threading.Lock()


class NoFreeThreadError(Exception):
    """No thread became free for a `def` call within `attempt_timeout`; it did not run."""


class ThreadCall:
    """A `def` call as a thread runs it, reporting back if it returns after being stuck."""

    __slots__ = (
        "_args",
        "_func",
        "_kwargs",
        "_on_return",
        "abandoned",
        "finished",
        "replaced",
        "semaphore",
        "started",
        "started_at",
        "step",
        "stuck",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_return: Callable[["ThreadCall"], None],
    ) -> None:
        self._func, self._args, self._kwargs = func, args, kwargs
        self._on_return = on_return
        self.started = False
        # When a thread started it (time.monotonic(), the event loop's clock): its
        # timeout counts from there.
        self.started_at: float | None = None
        # The deadline step the caller filed it under (see `FunctionCaller`).
        self.step = 0
        self.abandoned = False
        self.finished = False
        self.stuck = False
        # Whether its slot was given back when it got stuck (see `ThreadSlots.call_stuck`).
        self.replaced = False
        # Its function's max_concurrency, held until the call returns (None: no limit).
        self.semaphore: asyncio.Semaphore | None = None

    def __call__(self) -> Any:
        with _STUCK_LOCK:
            if self.abandoned:  # its caller gave up before a thread took it: never run
                return None
            self.started = True
            self.started_at = time.monotonic()
        try:
            return self._func(*self._args, **self._kwargs)
        finally:
            with _STUCK_LOCK:
                self.finished = True
                stuck = self.stuck
            if stuck:
                self._on_return(self)

    def try_abandon(self) -> bool:
        """Make sure a call no thread has started never runs; False if one started it."""
        with _STUCK_LOCK:
            if self.started:
                return False
            self.abandoned = True
            return True

    def mark_stuck(self) -> bool:
        """Mark the call stuck (its caller gave up while it runs); return False if it
        returned already, or had not started (then it never will)."""
        with _STUCK_LOCK:
            if not self.started:
                self.abandoned = True
                return False
            if self.finished:
                return False
            self.stuck = True
            return True


class ThreadSlots:
    """The thread accounting of one pool: stuck calls, and the stand-ins they got."""

    def __init__(self, pool: DaemonThreadPool, size: int, *, max_stuck: int) -> None:
        self._pool = pool
        self.size = size
        self.max_stuck = max_stuck
        self.stuck = 0
        # Stuck calls that got a stand-in thread (at most `max_stuck`).
        self._replaced = 0

    @property
    def busy(self) -> int:
        """Return how many of the `size` threads run a call (stuck calls with a stand-in
        do not count: their thread is extra)."""
        return max(self._pool.running - self._replaced, 0)

    @property
    def waiting(self) -> int:
        """Return how many calls wait for a thread."""
        return self._pool.queued

    def call_stuck(self) -> bool:
        """Count a call that outlived its timeout; return whether it got a stand-in."""
        self.stuck += 1
        if self._replaced < self.max_stuck:
            self._replaced += 1
            self._pool.grow()
            return True
        return False

    def stuck_returned(self, replaced: bool) -> None:
        """Count a stuck call's return; the pool is back to its size if it had a stand-in."""
        self.stuck -= 1
        if replaced:
            self._replaced -= 1
            self._pool.shrink()
