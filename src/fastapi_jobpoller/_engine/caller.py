"""Calling user functions: `async def` awaited, `def` on a thread or process pool.

Every call is bounded by the attempt timeout and by the function's `max_concurrency`.
A timed-out `def` function cannot be stopped: it is stuck on its thread, which is replaced
up to `max_stuck_threads` (see `thread_slots.py`); threads are daemons (see `threads.py`),
so a stuck one never keeps the process from exiting.
"""

import asyncio
import contextlib
import functools
import json
import math
import multiprocessing
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..config import JobPollerSettings
from .registry import RegisteredFunction
from .thread_slots import NoFreeThreadError, ThreadCall, ThreadSlots
from .threads import DaemonThreadPool

__all__ = ["FunctionCaller", "describe", "format_traceback", "is_json", "storable_text"]

# Longest traceback stored with a failed attempt or run.
_MAX_TRACEBACK_CHARS = 8000
# Longest error message stored: well inside MySQL's TEXT (64 KiB) in any encoding.
_MAX_MESSAGE_CHARS = 4000
# Calls on threads time out in steps of a thousandth of the timeout, at least this many
# seconds: all calls whose deadline falls in one step share one timer, not one each.
_SHORTEST_DEADLINE_STEP_SECONDS = 0.01


def is_json(value: Any) -> bool:
    """Return whether every database can store `value` as JSON.

    NaN and infinities are not JSON, and lone surrogates are not UTF-8: PostgreSQL and
    MySQL refuse both.
    """
    if value is None or type(value) is int or type(value) is bool:  # most progress values
        return True
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return False
    return True


def describe(error: BaseException) -> str:
    """Return `Type: message` for an exception (just `Type` if it has no message), fit to
    be stored (see `storable_text`)."""
    text = str(error)
    return storable_text(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def format_traceback(error: BaseException) -> str:
    """Return the exception's traceback as text, trimmed to its last 8,000 characters."""
    text = "".join(traceback.format_exception(error))
    return storable_text(text[-_MAX_TRACEBACK_CHARS:], limit=_MAX_TRACEBACK_CHARS)


def storable_text(text: str, *, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """Return `text` as every database can store it: no NUL (PostgreSQL refuses it), no
    lone surrogate (not UTF-8), at most `limit` characters. An error message comes from
    user code and may hold anything; one refused value must not fail a batch of writes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FunctionCaller:
    """Runs registered functions for one process's engine."""

    def __init__(
        self,
        settings: JobPollerSettings,
        *,
        on_stuck: Callable[[str, int], None] = lambda function, stuck: None,
    ) -> None:
        """`on_stuck(function name, stuck calls now)` is told of each call that gets stuck."""
        self._settings = settings
        self._semaphores: dict[tuple[str, str], asyncio.Semaphore] = {}
        # `thread_pool_size` threads, and one more per stuck call (see `thread_slots.py`).
        self._threads = DaemonThreadPool(settings.thread_pool_size, name="jobpoller-worker")
        self.slots = ThreadSlots(
            self._threads, settings.thread_pool_size, max_stuck=settings.max_stuck_threads
        )
        self._on_stuck = on_stuck
        self._loop: asyncio.AbstractEventLoop | None = None
        self._processes: ProcessPoolExecutor | None = None
        # Unfinished thread calls by deadline step (see `_call_on_thread`).
        self._deadlines: dict[int, dict[asyncio.Future[Any], ThreadCall]] = {}
        self._deadline_step = max(settings.attempt_timeout / 1000, _SHORTEST_DEADLINE_STEP_SECONDS)

    async def call(self, function: RegisteredFunction, *args: Any, **kwargs: Any) -> Any:
        """Call `function` its way and return its value.

        Raises:
            TimeoutError: It ran longer than the `attempt_timeout` setting.
            Exception: Whatever the function raised.
        """
        # Without max_concurrency, the engine's own bound (async_concurrency tasks in
        # flight, one call each) is the limit: no semaphore to pass per call.
        if function.executor == "thread" and not function.is_async:
            semaphore = None
            if function.max_concurrency is not None:
                semaphore = self._semaphore(function)
                try:
                    # Bounded like a thread slot: stuck calls may hold every place.
                    async with asyncio.timeout(self._settings.attempt_timeout):
                        await semaphore.acquire()
                except TimeoutError:
                    raise NoFreeThreadError(
                        f"{function.name!r} had all its max_concurrency places taken for "
                        f"{self._settings.attempt_timeout:g} s"
                    ) from None
            return await self._call_on_thread(function, args, kwargs, semaphore)
        if function.max_concurrency is None:
            return await self._call(function, args, kwargs)
        async with self._semaphore(function):
            return await self._call(function, args, kwargs)

    async def _call(
        self, function: RegisteredFunction, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # asyncio.timeout, not wait_for: an `async def` runs in this task instead of a new
        # one.
        async with asyncio.timeout(self._settings.attempt_timeout):
            if function.is_async:
                return await function.func(*args, **kwargs)
            loop = asyncio.get_running_loop()
            call = functools.partial(function.func, *args, **kwargs)
            return await loop.run_in_executor(self._process_pool(), call)

    async def _call_on_thread(
        self,
        function: RegisteredFunction,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        semaphore: asyncio.Semaphore | None,
    ) -> Any:
        """Run a `def` function on the thread pool, bounded by the attempt timeout.

        The call joins the pool's queue; its timeout counts from when a thread starts it
        (`thread_slots.py`). The most frequent call of all, so its timeout is cheap: calls
        are grouped by deadline in steps of a thousandth of the timeout (at least 10 ms),
        and one timer per step looks at the calls of its step that have not finished: one
        still queued is not run (`NoFreeThreadError`), one a thread started late is filed
        again under its real deadline, and one past it fails with TimeoutError. The thread
        of a timed-out call runs on (it cannot be stopped): the call is stuck, and what it
        returns later is dropped.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        call = ThreadCall(function.func, args, kwargs, self._returned_from_thread)
        # A stuck call keeps its function's max_concurrency place until it returns: one
        # hanging service cannot take more threads than its limit.
        call.semaphore = semaphore
        try:
            future = self._threads.submit_to_loop(loop, call)
        except BaseException:
            _release(semaphore)
            raise
        self._file(loop, future, call, loop.time() + self._settings.attempt_timeout)
        try:
            result = await future
        except BaseException as error:
            if call.mark_stuck():  # still running on its thread
                call.replaced = self.slots.call_stuck()
                if isinstance(error, TimeoutError):  # not a cancel at shutdown
                    self._on_stuck(function.name, self.slots.stuck)
            else:
                _release(semaphore)
            raise
        else:
            _release(semaphore)
            return result
        finally:
            group = self._deadlines.get(call.step)
            if group is not None:
                group.pop(future, None)

    def _file(
        self,
        loop: asyncio.AbstractEventLoop,
        future: "asyncio.Future[Any]",
        call: ThreadCall,
        deadline: float,
    ) -> None:
        """File a call under the deadline step of `deadline`, with a timer per step."""
        step = math.ceil(deadline / self._deadline_step)
        group = self._deadlines.get(step)
        if group is None:
            group = self._deadlines[step] = {}
            loop.call_at(step * self._deadline_step, self._time_out, step)
        group[future] = call
        call.step = step

    def _returned_from_thread(self, call: ThreadCall) -> None:
        """A stuck call returned at last (called on its thread)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to count
                loop.call_soon_threadsafe(self._stuck_returned, call)

    def _stuck_returned(self, call: ThreadCall) -> None:
        self.slots.stuck_returned(call.replaced)
        _release(call.semaphore)

    def _time_out(self, step: int) -> None:
        loop = self._loop
        timeout = self._settings.attempt_timeout
        for future, call in self._deadlines.pop(step, {}).items():
            if future.done():
                continue
            if call.try_abandon():  # no thread started it in all that time
                future.set_exception(
                    NoFreeThreadError(
                        f"no thread was free for {timeout:g} s: {self.slots.stuck} stuck, "
                        f"{self.slots.busy} of {self.slots.size} busy"
                    )
                )
            elif (
                loop is not None
                and call.started_at is not None
                and call.started_at + timeout > loop.time()
            ):
                self._file(loop, future, call, call.started_at + timeout)
            else:
                # As asyncio.timeout raises it, so every kind of call reads the same.
                future.set_exception(TimeoutError())

    def _semaphore(self, function: RegisteredFunction) -> asyncio.Semaphore:
        key = (function.kind, function.name)
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            limit = function.max_concurrency or self._settings.async_concurrency
            semaphore = self._semaphores[key] = asyncio.Semaphore(limit)
        return semaphore

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._processes is None:
            # "spawn": a forked child would inherit the engine's threads and locks.
            self._processes = ProcessPoolExecutor(
                self._settings.process_pool_size, mp_context=multiprocessing.get_context("spawn")
            )
        return self._processes

    def shutdown(self) -> None:
        """Stop taking calls; calls still running are abandoned, not waited for."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)


def _release(semaphore: asyncio.Semaphore | None) -> None:
    if semaphore is not None:
        semaphore.release()
