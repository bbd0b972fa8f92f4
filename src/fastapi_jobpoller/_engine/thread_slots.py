"""Thread slots: how many `def` calls may run on the pool, and which threads are stuck.

A `def` call cannot be stopped. One that outlives `attempt_timeout` keeps its thread: it
is stuck. The first `max_stuck_threads` stuck calls give their slot back, and the pool
has a spare thread for it, so a function that hangs cannot starve the others; past that
cap a stuck call keeps its slot until it returns. A call waits for a slot before its
timeout starts, so calls queued behind stuck ones never count as timed out; one that
finds no slot within `attempt_timeout` is not run (`NoFreeThreadError`).
"""

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

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
        try:
            return self._func(*self._args, **self._kwargs)
        finally:
            with _STUCK_LOCK:
                self.finished = True
                stuck = self.stuck
            if stuck:
                self._on_return(self)

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
    """The slots of one thread pool, on one event loop."""

    def __init__(self, size: int, *, max_stuck: int) -> None:
        self.size = size
        self.max_stuck = max_stuck
        self._free = size
        # Calls waiting for a slot, first come first served, with the loop time at which
        # each gives up. Every wait has the same bound (`attempt_timeout`), so the first
        # waiter gives up first: one timer, for the first, serves them all (a timeout per
        # call cost an eighth of the engine's CPU at 10,000 active polls).
        self._waiters: collections.deque[tuple[asyncio.Future[None], float]] = (
            collections.deque()
        )
        self._timer: asyncio.TimerHandle | None = None
        self.stuck = 0
        # Stuck calls that gave their slot back (at most `max_stuck`).
        self._replaced = 0

    @property
    def busy(self) -> int:
        """Return how many slots are taken."""
        return self.size - self._free

    @property
    def waiting(self) -> int:
        """Return how many calls wait for a slot."""
        return sum(1 for waiter, _ in self._waiters if not waiter.done())

    async def acquire(self, wait_seconds: float) -> None:
        """Take a slot, waiting up to `wait_seconds` (the same bound for every call).

        Raises:
            NoFreeThreadError: None became free in time.
        """
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append((waiter, loop.time() + wait_seconds))
        if self._timer is None:
            self._timer = loop.call_at(self._waiters[0][1], self._give_up_waits, wait_seconds)
        try:
            await waiter
        except NoFreeThreadError:
            raise
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed a slot as it gave up
                self.release()
            raise

    def _give_up_waits(self, wait_seconds: float) -> None:
        """Fail the waits that reached their bound; set the timer for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._waiters:
            waiter, gives_up_at = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if gives_up_at > now:
                self._timer = loop.call_at(gives_up_at, self._give_up_waits, wait_seconds)
                return
            self._waiters.popleft()
            waiter.set_exception(
                NoFreeThreadError(
                    f"no thread was free for {wait_seconds:g} s: {self.stuck} stuck, "
                    f"{self.busy} of {self.size} busy"
                )
            )

    def release(self) -> None:
        """Give a slot back: to the first call waiting for one, or to the free count."""
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def call_stuck(self) -> bool:
        """Count a call that outlived its timeout; return whether its slot is given back."""
        self.stuck += 1
        if self._replaced < self.max_stuck:
            self._replaced += 1
            self.release()
            return True
        return False

    def stuck_returned(self, replaced: bool) -> None:
        """Count a stuck call's return; its slot comes back if it had kept it."""
        self.stuck -= 1
        if replaced:
            self._replaced -= 1
        else:
            self.release()
