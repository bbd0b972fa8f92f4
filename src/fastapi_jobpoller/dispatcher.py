"""The engine: claim due work in batches under leases, run it, write outcomes back.

One asyncio task loops: claim due polls, queued or orphaned job runs and due job ticks;
start each as a task; sleep until the next row is due (or a local submit wakes it, or
`idle_wait_seconds` pass, which bounds how late another process's submits are seen).
Database calls run on a small dedicated thread pool, never on the event loop; `def`
functions run on a thread (or process) pool, `async def` ones are awaited.
"""

import asyncio
import functools
import json
import logging
import multiprocessing
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from .config import JobPollerSettings
from .exceptions import DatabaseUnavailableError, FunctionNotFoundError
from .job_store import JobStore
from .models import JobRunState, PollInfo, PollState
from .outcomes import Done, Failed, Pending
from .poll_store import PollStore
from .registry import RegisteredFunction, Registry
from .transitions import AttemptError, Transition, after_attempt, backoff_delay, timed_out

__all__ = ["Dispatcher", "utcnow"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Threads for database calls: one claims while another writes outcomes back.
_DATABASE_THREADS = 2
# Longest pause between tries while the database is unreachable.
_MAX_OUTAGE_BACKOFF_SECONDS = 5.0


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _json_ready(value: Any) -> bool:
    try:
        # Storable everywhere: no NaN or infinities (PostgreSQL and MySQL refuse them),
        # no lone surrogates (not UTF-8, so no response could carry them either).
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError):
        return False
    return True


class Dispatcher:
    """Runs polls and job ticks for one process; owned by a `JobPoller`."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        registry: Registry,
        polls: PollStore,
        jobs: JobStore,
        worker_id: str,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._polls = polls
        self._jobs = jobs
        self.worker_id = worker_id
        self._rng = random.Random()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pending_writes: list[dict[str, Any]] = []
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._process_pool: ProcessPoolExecutor | None = None
        self.last_cycle_monotonic = 0.0
        self.database_ok = True

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the loops on the running event loop."""
        self._db_pool = ThreadPoolExecutor(_DATABASE_THREADS, thread_name_prefix="jobpoller-db")
        self._thread_pool = ThreadPoolExecutor(
            self._settings.thread_pool_size, thread_name_prefix="jobpoller-worker"
        )
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._writes_waiting = asyncio.Event()
        self._stopping = asyncio.Event()
        self.last_cycle_monotonic = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="jobpoller-dispatch"),
            asyncio.create_task(self._renew_loop(), name="jobpoller-renew"),
            asyncio.create_task(self._write_loop(), name="jobpoller-write"),
        ]

    @property
    def alive(self) -> bool:
        """Return whether the dispatch loop is running and has cycled recently."""
        if not self._tasks or self._tasks[0].done():
            return False
        stale_after = max(10.0, self._settings.idle_wait_seconds * 4)
        return time.monotonic() - self.last_cycle_monotonic < stale_after

    @property
    def in_flight(self) -> int:
        """Return how many attempts and runs this process is executing."""
        return len(self._in_flight)

    def wake(self) -> None:
        """Look for due work now (after a local submit or change)."""
        if self._tasks:
            self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming, give work in flight `grace` seconds, hand back the rest."""
        if not self._tasks:
            return
        self._stopping.set()
        self._wake.set()
        dispatch, renew, write = self._tasks
        await asyncio.gather(dispatch, return_exceptions=True)
        if self._in_flight:
            _, unfinished = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in unfinished:
                task.cancel()
            if unfinished:
                logger.warning(
                    "shutdown left %d attempts unfinished; their leases are handed back",
                    len(unfinished),
                    extra={"event": "shutdown_abandoned", "count": len(unfinished)},
                )
                await asyncio.wait(unfinished, timeout=1.0)
        renew.cancel()
        write.cancel()
        await asyncio.gather(renew, write, return_exceptions=True)
        try:
            await self._flush_writes()
            now = utcnow()
            await self._in_db(self._polls.release_leases, worker=self.worker_id, now=now)
            await self._in_db(self._jobs.release_leases, worker=self.worker_id, now=now)
        except (DatabaseUnavailableError, sa_exc.SQLAlchemyError) as error:
            logger.warning(
                "could not hand leases back at shutdown; they expire by themselves: %s",
                error,
                extra={"event": "shutdown_release_failed"},
            )
        self._thread_pool.shutdown(wait=False, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.shutdown(wait=False, cancel_futures=True)
        self._db_pool.shutdown(wait=True)
        self._tasks = []

    # -- loops -----------------------------------------------------------------------

    async def _in_db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._db_pool, functools.partial(function, *args, **kwargs)
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`, or less if woken."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            pass
        self._wake.clear()

    async def _dispatch_loop(self) -> None:
        outage_backoff = 0.1
        while not self._stopping.is_set():
            try:
                busy = await self._dispatch_once()
                self.database_ok = True
                outage_backoff = 0.1
                self.last_cycle_monotonic = time.monotonic()
                if busy:
                    await asyncio.sleep(0)
                    continue
                now = utcnow()
                next_due = min(
                    (d for d in await self._in_db(self._next_due) if d is not None), default=None
                )
                idle = self._settings.idle_wait_seconds
                delay = idle if next_due is None else (next_due - now).total_seconds()
                await self._sleep(min(idle, delay))
            except (DatabaseUnavailableError, sa_exc.SQLAlchemyError) as error:
                if self.database_ok:
                    logger.error(
                        "database unavailable; the engine keeps retrying: %s",
                        error,
                        extra={"event": "database_unavailable"},
                    )
                self.database_ok = False
                self.last_cycle_monotonic = time.monotonic()
                await self._sleep(outage_backoff)
                outage_backoff = min(outage_backoff * 2, _MAX_OUTAGE_BACKOFF_SECONDS)
            except Exception:  # a bug of ours must not stop the engine for good
                logger.exception("dispatch cycle failed", extra={"event": "dispatch_error"})
                await self._sleep(1.0)

    def _next_due(self) -> tuple[datetime | None, datetime | None]:
        return self._polls.next_due(), self._jobs.next_due()

    async def _dispatch_once(self) -> bool:
        """Claim and start what is due; return whether a claim came back full."""
        room = self._settings.async_concurrency - len(self._in_flight)
        if room <= 0:
            self._room.clear()
            await self._room.wait()
            return True
        now = utcnow()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        limit = min(self._settings.claim_batch_size, room)
        claim = await self._in_db(
            self._polls.claim,
            worker=self.worker_id,
            now=now,
            lease_until=lease_until,
            limit=limit,
        )
        for row in claim.attempts:
            self._spawn(self._attempt(row))
        for row in claim.expired:
            self._spawn(self._expire(row))
        for row in claim.callbacks:
            self._spawn(self._deliver_callbacks(row))
        room -= len(claim)
        runs: list[dict[str, Any]] = []
        if room > 0:
            runs = await self._in_db(
                self._jobs.claim_runs,
                worker=self.worker_id,
                now=now,
                lease_until=lease_until,
                limit=room,
            )
            room -= len(runs)
            if room > 0:
                runs += await self._in_db(
                    self._jobs.claim_ticks,
                    worker=self.worker_id,
                    now=now,
                    lease_until=lease_until,
                    limit=min(room, self._settings.claim_batch_size),
                )
        for run in runs:
            self._spawn(self._run_job(run))
        return len(claim) >= limit or room <= 0

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "engine task failed",
                exc_info=task.exception(),
                extra={"event": "engine_task_error"},
            )

    async def _renew_loop(self) -> None:
        period = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            if not self._in_flight:
                continue
            lease_until = utcnow() + timedelta(seconds=self._settings.lease_seconds)
            try:
                await self._in_db(
                    self._polls.renew_leases, worker=self.worker_id, lease_until=lease_until
                )
                await self._in_db(
                    self._jobs.renew_leases, worker=self.worker_id, lease_until=lease_until
                )
            except (DatabaseUnavailableError, sa_exc.SQLAlchemyError) as error:
                logger.warning(
                    "could not renew leases: %s", error, extra={"event": "lease_renew_failed"}
                )

    async def _write_loop(self) -> None:
        while True:
            await self._writes_waiting.wait()
            self._writes_waiting.clear()
            try:
                await self._flush_writes()
            except (DatabaseUnavailableError, sa_exc.SQLAlchemyError) as error:
                logger.warning(
                    "could not write poll outcomes; retrying: %s",
                    error,
                    extra={"event": "outcome_write_failed"},
                )
                await asyncio.sleep(1.0)
                self._writes_waiting.set()

    async def _flush_writes(self) -> None:
        batch, self._pending_writes = self._pending_writes, []
        if not batch:
            return
        try:
            await self._in_db(self._polls.write_pending, batch, worker=self.worker_id)
        except BaseException:
            self._pending_writes[:0] = batch
            raise

    # -- polls -----------------------------------------------------------------------

    async def _call(self, function: RegisteredFunction, arguments: dict[str, Any]) -> Any:
        """Call a registered function its way, bounded by the attempt timeout."""
        timeout = self._settings.attempt_timeout
        semaphore = self._semaphore(function)
        async with semaphore:
            if function.is_async:
                return await asyncio.wait_for(function.func(**arguments), timeout)
            loop = asyncio.get_running_loop()
            executor: Executor = self._thread_pool
            if function.executor == "process":
                executor = self._processes()
            call = functools.partial(function.func, **arguments)
            return await asyncio.wait_for(loop.run_in_executor(executor, call), timeout)

    def _semaphore(self, function: RegisteredFunction) -> asyncio.Semaphore:
        limit = function.max_concurrency or self._settings.async_concurrency
        key = f"{function.kind}:{function.name}"
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(limit)
        return self._semaphores[key]

    def _processes(self) -> ProcessPoolExecutor:
        if self._process_pool is None:
            self._process_pool = ProcessPoolExecutor(
                self._settings.process_pool_size, mp_context=multiprocessing.get_context("spawn")
            )
        return self._process_pool

    async def _attempt(self, row: dict[str, Any]) -> None:
        poll_id, attempt = row["id"], row["attempts"]
        try:
            function = self._registry.get("poll", row["function"])
        except FunctionNotFoundError:
            await self._unknown_function(row)
            return
        started = time.monotonic()
        outcome: Pending | Done | Failed | AttemptError
        try:
            value = await self._call(function, function.bind_arguments(row["arguments"]))
        except TimeoutError:
            outcome = AttemptError(f"attempt timed out after {self._settings.attempt_timeout:g} s")
        except Exception as error:
            outcome = AttemptError(_describe(error))
        else:
            outcome = _checked_outcome(value)
        if isinstance(outcome, AttemptError):
            logger.warning(
                "poll %s attempt %d failed: %s",
                poll_id,
                attempt,
                outcome.message,
                extra={
                    "event": "poll_attempt_error",
                    "poll_id": poll_id,
                    "function": row["function"],
                    "attempt": attempt,
                    "error": outcome.message,
                },
            )
        now = utcnow()
        transition = after_attempt(row, outcome, now, self._rng)
        logger.debug(
            "poll %s attempt %d: %s",
            poll_id,
            attempt,
            transition.state.value,
            extra={
                "event": "poll_attempt",
                "poll_id": poll_id,
                "function": row["function"],
                "attempt": attempt,
                "outcome": transition.state.value,
                "duration": time.monotonic() - started,
            },
        )
        await self._apply(row, transition, now)

    async def _unknown_function(self, row: dict[str, Any]) -> None:
        logger.error(
            "poll %s names function %r, which is not registered in this process; "
            "it stays stored and is retried later",
            row["id"],
            row["function"],
            extra={
                "event": "poll_function_unknown",
                "poll_id": row["id"],
                "function": row["function"],
            },
        )
        now = utcnow()
        delay = max(
            backoff_delay(row, row["attempts"], self._rng),
            self._settings.unknown_function_retry_seconds,
        )
        transition = Transition(
            state=PollState.PENDING,
            consecutive_errors=row["consecutive_errors"],
            next_poll_at=now + timedelta(seconds=delay),
            progress=row.get("progress"),
            error=f"function {row['function']!r} is not registered in {self.worker_id}",
        )
        await self._apply(row, transition, now)

    async def _expire(self, row: dict[str, Any]) -> None:
        now = utcnow()
        transition = timed_out(row, now)
        if transition is not None:
            await self._apply(row, transition, now)

    async def _apply(self, row: dict[str, Any], transition: Transition, now: datetime) -> None:
        if not transition.is_terminal:
            self._pending_writes.append(
                {
                    "id": row["id"],
                    "attempts": row["attempts"],
                    "consecutive_errors": transition.consecutive_errors,
                    "next_poll_at": transition.next_poll_at,
                    "progress": transition.progress,
                    "error": transition.error,
                    "updated_at": now,
                }
            )
            self._writes_waiting.set()
            return
        values = {
            "state": transition.state.value,
            "consecutive_errors": transition.consecutive_errors,
            "progress": transition.progress,
            "result": transition.result,
            "error": transition.error,
            "callbacks_pending": bool(row["callbacks"]),
        }
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        landed = await self._in_db(
            self._polls.write_terminal,
            row["id"],
            worker=self.worker_id,
            attempts=row["attempts"],
            values=values,
            now=now,
            lease_until=lease_until,
        )
        if not landed:
            logger.info(
                "poll %s: outcome discarded, the poll was cancelled or its lease lost",
                row["id"],
                extra={"event": "poll_outcome_discarded", "poll_id": row["id"]},
            )
            return
        logger.log(
            logging.INFO if transition.state is PollState.SUCCEEDED else logging.WARNING,
            "poll %s %s after %d attempts",
            row["id"],
            transition.state.value,
            row["attempts"],
            extra={
                "event": f"poll_{transition.state.value}",
                "poll_id": row["id"],
                "function": row["function"],
                "attempt": row["attempts"],
                "outcome": transition.state.value,
                "error": transition.error,
            },
        )
        if row["callbacks"]:
            row = {
                **row,
                **values,
                "finished_at": now,
                "updated_at": now,
                "next_poll_at": lease_until,
                "lease_expires_at": lease_until,
            }
            await self._deliver_callbacks(row)

    async def _deliver_callbacks(self, row: dict[str, Any]) -> None:
        """Run a terminal poll's callbacks; on any failure, all run again later."""
        info = PollInfo.model_validate(row)
        failed = False
        for name in row["callbacks"]:
            try:
                callback = self._registry.get("callback", name)
                await self._run_callback(callback, info)
            except Exception as error:
                failed = True
                logger.error(
                    "callback %r for poll %s failed; all its callbacks run again in %g s: %s",
                    name,
                    info.id,
                    self._settings.callback_retry_seconds,
                    _describe(error),
                    extra={
                        "event": "poll_callback_failed",
                        "poll_id": info.id,
                        "function": name,
                        "error": _describe(error),
                    },
                )
                break
        now = utcnow()
        if failed:
            retry_at = now + timedelta(seconds=self._settings.callback_retry_seconds)
            await self._in_db(
                self._polls.release_for_retry, row["id"], worker=self.worker_id, at=retry_at
            )
        else:
            await self._in_db(
                self._polls.finish_callbacks, row["id"], worker=self.worker_id, now=now
            )

    async def _run_callback(self, callback: RegisteredFunction, info: PollInfo) -> None:
        timeout = self._settings.attempt_timeout
        if callback.is_async:
            await asyncio.wait_for(callback.func(info), timeout)
        else:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(
                loop.run_in_executor(self._thread_pool, callback.func, info), timeout
            )

    # -- job runs --------------------------------------------------------------------

    async def _run_job(self, run: dict[str, Any]) -> None:
        started = time.monotonic()
        state, result, error = JobRunState.SUCCEEDED, None, None
        try:
            function = self._registry.get("job", run["function"])
            value = await self._call(function, function.bind_arguments(run["arguments"]))
            result = value if _json_ready(value) else repr(value)
        except TimeoutError:
            state, error = (
                JobRunState.FAILED,
                (f"run timed out after {self._settings.attempt_timeout:g} s"),
            )
        except Exception as exc:
            state, error = JobRunState.FAILED, _describe(exc)
        duration = time.monotonic() - started
        extra = {
            "event": f"job_run_{state.value}",
            "job_id": run["job_id"],
            "function": run["function"],
            "scheduled_time": run["scheduled_at"].isoformat(),
            "duration": duration,
            "outcome": state.value,
            "error": error,
        }
        if state is JobRunState.FAILED:
            logger.error("job %s run failed: %s", run["job_id"], error, extra=extra)
        else:
            logger.debug("job %s ran in %.3f s", run["job_id"], duration, extra=extra)
        await self._in_db(
            self._jobs.finish_run,
            run,
            worker=self.worker_id,
            state=state,
            result=result,
            error=error,
            now=utcnow(),
        )


def _checked_outcome(value: object) -> Pending | Done | Failed | AttemptError:
    if not isinstance(value, Pending | Done | Failed):
        return AttemptError(
            f"poll functions return Pending(), Done() or Failed(), not {type(value).__name__}"
        )
    payload = value.progress if isinstance(value, Pending) else value.result
    if not _json_ready(payload):
        return AttemptError(f"{type(value).__name__} holds a value that is not JSON")
    if isinstance(value, Pending) and value.retry_after is not None and value.retry_after < 0:
        return AttemptError("Pending.retry_after must not be negative")
    return value
