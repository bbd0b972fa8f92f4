"""A thread pool whose threads never keep the process alive.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so
one user function stuck in a socket read would keep a worker process from ever exiting
after SIGTERM. Our pool's threads are daemons: shutdown hands their leases back, and the
process exits even if a thread is stuck.
"""

import asyncio
import collections
import functools
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

__all__ = ["DaemonThreadPool", "run_in"]

P = ParamSpec("P")
T = TypeVar("T")

# Who learns the outcome: a `concurrent.futures.Future` (`submit`), or an asyncio future
# and its loop (`submit_to_loop`, the engine's path: no condition variable and no future
# chaining per call).
_Target = Future[Any] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_WorkItem = tuple[_Target, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """Up to `max_workers` daemon threads, started on demand, fed from one queue."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False
        self._numbers = itertools.count(1)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def submit_to_loop(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[P, T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> "asyncio.Future[T]":
        """Run `fn` on a thread; its outcome resolves the returned future of `loop`.

        What `loop.run_in_executor(pool, ...)` does, for less work on the event loop per
        call. Cancelling the future before a thread picks the call up skips it.
        """
        future: asyncio.Future[T] = loop.create_future()
        self._put(((loop, future), fn, args, kwargs))
        return future

    @property
    def queued(self) -> int:
        """Return how many calls wait for a thread."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Return how many threads are running a call (stuck ones included)."""
        return max(len(self._threads) - self._idle, 0)

    def grow(self) -> None:
        """Allow one more thread, and start it if calls are waiting (a stuck call's stand-in)."""
        with self._lock:
            self._max_workers += 1
            if not self._shutdown and self._queue.qsize() > 0 and self._idle == 0:
                self._start_thread()

    def shrink(self) -> None:
        """Allow one thread less: one thread ends once it reaches the front of the queue."""
        with self._lock:
            self._max_workers -= 1
            if len(self._threads) > self._max_workers and not self._shutdown:
                self._queue.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{next(self._numbers)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _put(self, item: _WorkItem) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that is shut down")
            self._queue.put(item)
            if self._idle == 0 and len(self._threads) < self._max_workers:
                self._start_thread()
            else:
                self._idle -= 1 if self._idle else 0

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                with self._lock:  # it was idle, waiting: it leaves the pool
                    self._idle -= 1 if self._idle else 0
                    self._threads.remove(threading.current_thread())
                return
            target, fn, args, kwargs = item
            if isinstance(target, Future):
                if target.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as error:
                        target.set_exception(error)
                    else:
                        target.set_result(result)
            else:
                _run_for_loop(target, fn, args, kwargs)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    continue
                target = item[0]
                if isinstance(target, Future):
                    target.cancel()
                else:
                    _call_on_loop(target[0], target[1].cancel)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the threads of a shut-down pool to end.

        Returns:
            Whether they all ended (a thread stuck in a call keeps running, as a daemon).
        """
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(thread.is_alive() for thread in threads)


def _run_for_loop(
    target: tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    loop, future = target
    # Cancelled, or timed out while it waited for a thread: its caller has moved on, so
    # it does not run late. (Read across threads, as concurrent.futures does: benign.)
    if future.done():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:
        _inbox(loop).deliver(future, None, error)
    else:
        _inbox(loop).deliver(future, result, None)


# Outcomes settled per turn of the event loop (see `_Inbox`).
_SETTLE_SLICE = 64


class _Inbox:
    """Outcomes of thread calls on their way to one event loop.

    Waking a loop from another thread costs a callback handle and a write to its wake-up
    pipe. Under load, threads finish calls faster than the loop takes them, so outcomes
    queue here and one wake-up settles those that arrived before the loop got to them,
    `_SETTLE_SLICE` per turn of the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the inbox is the value of a weak mapping keyed by this loop.
        self._loop = weakref.ref(loop)
        self._outcomes: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = (
            collections.deque()
        )
        self._woken = False

    def deliver(
        self, future: "asyncio.Future[Any]", result: Any, error: BaseException | None
    ) -> None:
        """Hand an outcome to the loop (from any thread)."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return  # nobody waits for it any more
        # Queue first, then look at the flag; `_settle_all` clears the flag before it
        # drains: an outcome is either drained by a wake-up already on its way or makes one.
        self._outcomes.append((future, result, error))
        if not self._woken:
            self._woken = True
            try:
                loop.call_soon_threadsafe(self._settle_all)
            except RuntimeError:  # closed meanwhile: drop what it would have settled
                self._outcomes.clear()

    def _settle_all(self) -> None:
        outcomes = self._outcomes
        for _ in range(_SETTLE_SLICE):
            if not outcomes:
                break
            _settle(*outcomes.popleft())
        loop = self._loop()
        if loop is None:
            return
        if outcomes:
            # The rest after what else is ready, network events among them: a burst of
            # outcomes does not hold up a request that arrived meanwhile.
            loop.call_soon(self._settle_all)
            return
        self._woken = False
        if outcomes and not self._woken:  # queued between the look and the flag
            self._woken = True
            loop.call_soon(self._settle_all)


_inboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox]" = (
    weakref.WeakKeyDictionary()
)
_inboxes_lock = threading.Lock()


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    try:
        return _inboxes[loop]
    except KeyError:
        with _inboxes_lock:
            return _inboxes.setdefault(loop, _Inbox(loop))


def _call_on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any
) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody waits for this any more
        pass


def _settle(future: "asyncio.Future[Any]", result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile (a timeout): the outcome is dropped
        return
    if error is None:
        future.set_result(result)
        return
    try:
        future.set_exception(error)
    except TypeError:  # StopIteration cannot travel through a future
        future.set_exception(RuntimeError(f"the function raised {error!r}"))


async def run_in(
    pool: Executor, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run a blocking `function` on `pool` and await its result."""
    loop = asyncio.get_running_loop()
    if isinstance(pool, DaemonThreadPool):
        return await pool.submit_to_loop(loop, function, *args, **kwargs)
    return await loop.run_in_executor(pool, functools.partial(function, *args, **kwargs))
