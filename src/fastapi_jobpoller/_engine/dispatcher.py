"""The engine loop: claim due work in batches under leases, start it, write it back.

One task loops: claim due polls, queued or orphaned job runs and due job ticks; start
each as a task (`PollRunner`, `JobRunner`); sleep until the next row is due, a local
change wakes it, or `idle_wait_seconds` pass (which bounds how late another process's
submits are seen). Beside it, `WriteBack` renews leases and writes pending outcomes in
batches, and `prune_loop` prunes old history. Database calls run on a small daemon
thread pool, never on the event loop.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from .._storage.stores import Stores
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..events import EventType
from ..exceptions import DatabaseUnavailableError
from ..models import JobRunState
from .caller import FunctionCaller
from .cycle_record import CycleRecord
from .event_bus import EventBus
from .job_runner import JobRunner
from .poll_runner import PollRunner
from .pruner import prune_loop
from .registry import Registry
from .thread_slots import ThreadSlots
from .threads import DaemonThreadPool, run_in
from .upkeep import Upkeep
from .write_back import WriteBack

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

# Threads for database calls: one claims while another writes outcomes back.
_DATABASE_THREADS = 2
# Longest pause between tries while the database is unreachable.
# (Work must resume within 5 s of the database coming back.)
_MAX_OUTAGE_BACKOFF_SECONDS = 2.0
# Longest wait at shutdown for the database threads to finish their last call.
_DATABASE_JOIN_SECONDS = 5.0
# While due polls keep the loop busy, it looks for job ticks and queued job runs at most
# this often (two transactions per look), unless a change wakes it or a job is known due.
_JOB_LOOK_PERIOD_SECONDS = 0.25
# Wakes (local changes, NOTIFYs) make it look sooner, but not more often than this: a
# burst of submits must not turn into a burst of job claims.
_JOB_LOOK_MIN_SECONDS = 0.05
# Attempts started per turn of the event loop when a claim brings many.
_SPAWN_SLICE = 64
# After a claim that found due polls but not a full batch, the loop waits this long
# before claiming again instead of asking for the next due time: under steady load the
# next polls are due within milliseconds, and one claim per pause gathers them all.
_CLAIM_GATHER_SECONDS = 0.01


class Dispatcher:
    """Runs polls and job ticks for one process; owned by a `JobPoller`."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        registry: Registry,
        events: EventBus,
        stores: Stores,
        worker_id: str,
        startup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._events = events
        self._stores = stores
        self._polls = stores.attempts
        self._runs = stores.runs
        self.worker_id = worker_id
        # Run (and retried while the database is unreachable) before the first claim.
        self._startup = startup
        # Each task in flight, with the poll or job run whose lease it needs kept alive.
        self._in_flight: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.cycles = CycleRecord(database_ok=startup is None)
        self._jobs_looked_at = float("-inf")
        self._look_for_jobs = True
        self._job_due: datetime | None = None
        self._last_claim_size = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the loops on the running event loop."""
        self._database_pool = DaemonThreadPool(_DATABASE_THREADS, name="jobpoller-db")
        self._caller = FunctionCaller(self._settings, on_stuck=self._thread_stuck)
        self._write_back = WriteBack(
            settings=self._settings,
            polls=self._polls,
            runs=self._runs,
            database_pool=self._database_pool,
            worker_id=self.worker_id,
            in_flight=self._in_flight,
        )
        self.upkeep = Upkeep(
            settings=self._settings,
            registry=self._registry,
            polls=self._stores.polls,
            jobs=self._stores.jobs,
            quarantine=self._stores.quarantine,
            database_pool=self._database_pool,
        )
        self._poll_runner = PollRunner(
            settings=self._settings,
            registry=self._registry,
            caller=self._caller,
            events=self._events,
            store=self._polls,
            database_pool=self._database_pool,
            worker_id=self.worker_id,
            write_back=self._write_back,
        )
        self._job_runner = JobRunner(
            registry=self._registry,
            caller=self._caller,
            events=self._events,
            store=self._runs,
            database_pool=self._database_pool,
            worker_id=self.worker_id,
        )
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self.cycles.beat()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="jobpoller-dispatch"),
            asyncio.create_task(self._write_back.write_loop(), name="jobpoller-write"),
            asyncio.create_task(self._write_back.renew_loop(), name="jobpoller-renew"),
            asyncio.create_task(
                prune_loop(self._settings, self._stores.history, self._database_pool),
                name="jobpoller-prune",
            ),
            asyncio.create_task(self.upkeep.loop(), name="jobpoller-upkeep"),
        ]

    @property
    def alive(self) -> bool:
        """Return whether the dispatch loop is running and has cycled recently."""
        if not self._tasks or self._tasks[0].done():
            return False
        return self.cycles.recent(stale_after=max(10.0, self._settings.idle_wait_seconds * 4))

    def _thread_stuck(self, function: str, stuck: int) -> None:
        self._events.publish(
            EventType.THREAD_STUCK,
            self.worker_id,
            function=function,
            error=f"a call ran past attempt_timeout ({self._settings.attempt_timeout:g} s) "
            f"and keeps its thread; {stuck} stuck now",
            details={"stuck_threads": stuck, "max_stuck_threads": self._settings.max_stuck_threads},
        )

    @property
    def threads(self) -> ThreadSlots:
        """Return the thread slots of `def` calls (for health)."""
        return self._caller.slots

    def mark_ready(self) -> None:
        """Skip the startup hook: it already succeeded before the engine started."""
        self._startup = None
        self.cycles.database_ok = True

    @property
    def in_flight(self) -> int:
        """Return how many attempts and runs this process is executing."""
        return len(self._in_flight)

    def wake(self, jobs: bool = True) -> None:
        """Look for due work now (after a local submit or change); `jobs`: job work too."""
        if self._tasks:
            if jobs:
                self._look_for_jobs = True
            self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming, give work in flight `grace` seconds, hand back the rest."""
        if not self._tasks:
            return
        self._stopping.set()
        self._wake.set()
        self._room.set()
        dispatch, *helpers = self._tasks
        await asyncio.gather(dispatch, return_exceptions=True)
        if self._in_flight:
            _, unfinished = await asyncio.wait(list(self._in_flight), timeout=grace)
            for task in unfinished:
                task.cancel()
            if unfinished:
                logger.warning(
                    "shutdown left %d attempts unfinished; their leases are handed back",
                    len(unfinished),
                    extra={"event": "shutdown_abandoned", "count": len(unfinished)},
                )
                await asyncio.wait(unfinished, timeout=1.0)
        # The write loop is closed, not cancelled: a batch being written when the stop
        # came is written once, and whatever is left is flushed below.
        write_loop, *others = helpers
        for task in others:
            task.cancel()
        await self._write_back.close(write_loop)
        await asyncio.gather(*others, return_exceptions=True)
        if self._startup is None:  # else this process never held anything
            await self._write_back.hand_back()
        self._caller.shutdown()
        self._database_pool.shutdown(wait=False)
        # Let the database threads return their connections before the engine is
        # disposed; one stuck on an unreachable server is left behind (a daemon).
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._database_pool.join, _DATABASE_JOIN_SECONDS)
        self._tasks = []

    # -- the loop --------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`, or less if woken."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            pass
        self._wake.clear()

    async def _dispatch_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await self._run_startup()
                busy = await self._dispatch_once()
                self.cycles.succeeded()
                backoff = 0.1
                await self._pause(busy)
            except DatabaseUnavailableError as error:
                self.cycles.database_down(error)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _MAX_OUTAGE_BACKOFF_SECONDS)
            except Exception as error:  # a refused statement, or a bug of ours: retried
                self.cycles.failed(error)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _MAX_OUTAGE_BACKOFF_SECONDS)

    async def _run_startup(self) -> None:
        if self._startup is not None:
            await self._startup()
            self._startup = None
            logger.warning(
                "database reachable: the engine starts working",
                extra={"event": "database_available"},
            )

    async def _pause(self, busy: bool) -> None:
        """Wait before the next cycle: not at all when busy, else until work is due."""
        if busy:
            await asyncio.sleep(0)
            return
        idle = self._settings.idle_wait_seconds
        if self._last_claim_size:
            # Not cut short by wakes: the next claim comes within the pause anyway.
            await asyncio.sleep(min(idle, _CLAIM_GATHER_SECONDS))
            return
        next_due = await run_in(self._database_pool, self._next_due)
        delay = idle if next_due is None else (next_due - utcnow()).total_seconds()
        await self._sleep(min(idle, delay))

    def _next_due(self) -> datetime | None:
        self._job_due = self._runs.next_due(self._registry.names("job"))
        due = [d for d in (self._polls.next_due(), self._job_due) if d is not None]
        return min(due, default=None)

    def _jobs_may_be_due(self, now: datetime) -> bool:
        """Return whether this cycle looks for job work; each look costs two transactions."""
        clock = time.monotonic()
        since = clock - self._jobs_looked_at
        if (
            (self._look_for_jobs and since >= _JOB_LOOK_MIN_SECONDS)
            or since >= _JOB_LOOK_PERIOD_SECONDS
            or (self._job_due is not None and self._job_due <= now)
        ):
            self._look_for_jobs = False
            self._jobs_looked_at = clock
            self._job_due = None  # known again at the next idle check
            return True
        return False

    async def _dispatch_once(self) -> bool:
        """Claim and start what is due; return whether there may be more right now."""
        room = self._settings.async_concurrency - len(self._in_flight)
        if room <= 0:
            # Full: wait for room, still beating, so a busy engine never reads as dead.
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout=self._settings.idle_wait_seconds)
            self.cycles.beat()
            return True
        now = utcnow()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        limit = min(self._settings.claim_batch_size, room)
        claim = await run_in(
            self._database_pool,
            self._polls.claim,
            worker=self.worker_id,
            now=now,
            lease_until=lease_until,
            limit=limit,
        )
        self._last_claim_size = len(claim)
        for number, row in enumerate(claim.attempts, 1):
            self._spawn(self._poll_runner.attempt(row), "poll", row["id"])
            if number % _SPAWN_SLICE == 0:
                # Let the loop serve what else is ready (requests of the app) between
                # slices of a large claim, instead of starting them all in one turn.
                await asyncio.sleep(0)
        for row in claim.expired:
            self._spawn(self._poll_runner.expire(row), "poll", row["id"])
        for row in claim.callbacks:
            self._spawn(self._poll_runner.deliver_callbacks(row), "poll", row["id"])
        room -= len(claim)
        if self._stopping.is_set():  # stop() came while attempts were being started
            return False
        if room > 0 and self._jobs_may_be_due(now):
            room -= await self._claim_job_work(now, lease_until, room)
        return len(claim) >= limit or room <= 0

    async def _claim_job_work(self, now: datetime, lease_until: datetime, room: int) -> int:
        """Claim queued or orphaned runs, then due ticks, of the job functions registered
        here; start the runs, report the rest. Return how many runs were claimed."""
        functions = self._registry.names("job")
        if not functions:  # ticks wait for a process that can run them
            return 0
        runs = await run_in(
            self._database_pool,
            self._runs.claim_runs,
            worker=self.worker_id,
            now=now,
            lease_until=lease_until,
            limit=room,
            functions=functions,
        )
        self._start_runs(runs)  # before the tick claim: should it fail, these still run
        claimed = len(runs)
        if room > claimed:
            ticks = await run_in(
                self._database_pool,
                self._runs.claim_ticks,
                worker=self.worker_id,
                now=now,
                lease_until=lease_until,
                limit=min(room - claimed, self._settings.claim_batch_size),
                functions=functions,
            )
            self._start_runs(ticks.runs)
            claimed += len(ticks.runs)
            for job in ticks.quarantined:
                self._job_runner.report_quarantined(job)
        return claimed

    def _start_runs(self, runs: list[dict[str, Any]]) -> None:
        """Start the claimed runs to execute; report those recorded without running."""
        for run in runs:
            if run["state"] == JobRunState.RUNNING.value:
                self._spawn(self._job_runner.run(run), "run", run["id"])
            else:
                self._job_runner.report_unrun(run)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], kind: str, row_id: str) -> None:
        task = asyncio.create_task(coroutine)
        self._in_flight[task] = (kind, row_id)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "engine task failed; its lease expires and the work runs again",
                exc_info=task.exception(),
                extra={"event": "engine_task_error"},
            )
