"""Presence: this process's row in the worker registry, and the takeover of lost ones.

Every `heartbeat_seconds` a process refreshes its row (what it registers, its work in
flight, its stuck threads) and looks for lost processes (see `_storage/worker_store.py`).
A process whose session ended is deleted by the one process whose DELETE removes it, which
then hands that process's leases back at once (polls come due now, job runs are queued
again and stop counting towards `max_instances`) and wakes every engine. A row whose
heartbeat stopped long ago is only deleted: its leases expire by themselves.

On PostgreSQL a process is lost when the presence lock of its session is free, so a
killed process's work resumes within about two heartbeats of the kill instead of a lease
later. A process only trusts that test once its own lock has been held for a few
seconds: after a database restart every session is new, and the others need a moment to
take their locks again.
"""

import asyncio
import logging
import os
import socket
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta

from .._storage.stores import Stores
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..events import EventType
from .event_bus import EventBus
from .registry import Registry
from .threads import run_in
from .write_back import DATABASE_ERRORS

__all__ = ["Presence", "TakenOver", "WorkerStats", "presence_lock_keys"]

logger = logging.getLogger(__name__)

# How long this process's own presence lock must have been held before the locks of
# others are trusted: long enough for every process to take its lock again after a
# database restart (their reconnect pause is 2 s).
_TRUST_LOCKS_AFTER_SECONDS = 5.0
# A process whose lock is free is taken over once its heartbeat is this many periods old
# (the longer of its own period and the checker's, by the database's clock): one that lost
# only its listening connection registers without its lock at its next beat, and keeps
# its work.
_SILENT_HEARTBEATS = 1.5
# Seconds after the database server started during which no lock is trusted: processes
# take their locks again within a couple of seconds of a restart.
_SERVER_SETTLED_SECONDS = 10.0
# How long a stopping process tries to remove its row.
_LEAVE_SECONDS = 5.0
# Heartbeats missed before a row is forgotten (if that is longer than a lease).
_STALE_HEARTBEATS = 10
# How long to wait for the presence lock before registering without it.
_LOCK_WAIT_SECONDS = 10.0


def presence_lock_keys(table_prefix: str) -> tuple[int, int]:
    """Return a fresh (space, key) pair: the space names this table prefix."""
    space = zlib.crc32(table_prefix.encode()) & 0x7FFFFFFF
    return space, int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What this process's row says of its work, read at each heartbeat."""

    in_flight: int = 0
    threads_stuck: int = 0


class Presence:
    """The heartbeat loop of one process."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        stores: Stores,
        registry: Registry,
        events: EventBus,
        worker_id: str,
        role: str,
        database_pool: Executor,
        lock: tuple[int, int] | None,
        present_since: Callable[[], float | None],
        lock_lost: Callable[[], None],
        stats: Callable[[], WorkerStats],
        wake: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._registry = registry
        self._events = events
        self.worker_id = worker_id
        self._role = role
        self._pool = database_pool
        self._lock = lock
        self._present_since = present_since
        self._lock_lost = lock_lost
        self._stats = stats
        self._wake = wake
        self.heartbeat_seconds = settings.heartbeat_seconds
        self._started = time.monotonic()
        self._started_at = utcnow()
        self._registered = False
        self.taken_over = 0

    async def loop(self, ready: Callable[[], bool]) -> None:
        """Beat every `heartbeat_seconds` once `ready()` (the tables exist), forever.

        A failed beat is logged once per run of failures and tried again at the next;
        nothing ends the loop but its cancellation."""
        failing = False
        while True:
            try:
                lost = await run_in(self._pool, self.beat) if ready() else []
                self._report(lost)
                failing = False
            except Exception as error:  # the heartbeat must outlive any one failure
                if not failing:
                    logger.warning(
                        "could not refresh this process's heartbeat: %s",
                        error,
                        exc_info=not isinstance(error, DATABASE_ERRORS),
                        extra={"event": "heartbeat_failed"},
                    )
                failing = True
                self._registered = False  # write the row again once it works
            await asyncio.sleep(self._settings.heartbeat_seconds)

    def beat(self) -> list["TakenOver"]:
        """Refresh or write this process's row, then take over lost ones (blocking).

        Returns the processes taken over, for the loop to report on the event loop.
        """
        if self._waiting_for_lock():
            return []  # the presence lock is on its way: register with it
        lock_key = self._held_lock_key()
        now, stats = utcnow(), self._stats()
        workers = self._stores.workers
        if not self._registered or not workers.beat(
            self.worker_id,
            now=now,
            in_flight=stats.in_flight,
            threads_stuck=stats.threads_stuck,
            lock_key=lock_key,
        ):
            workers.register(self._row(lock_key, stats))
            self._registered = True
        within = self._settings.lease_seconds
        self._registry.elsewhere = workers.functions_alive(within_seconds=within)
        if self._role == "client":
            return []
        return self._take_over_lost(lock_key)

    def _held_lock_key(self) -> int | None:
        """The presence lock's key if the database shows it held, else None.

        Asked of the database, not of the listening thread: a connection that died
        without a word (a half-open socket) leaves the thread believing it holds the
        lock. Then the thread is told to connect again, and the row says "no lock", so
        that nobody judges this live process by a lock it lost.
        """
        if self._lock is None or self._present_since() is None:
            return None
        if self._stores.workers.holds_lock(self._lock):
            return self._lock[1]
        self._lock_lost()
        return None

    def _waiting_for_lock(self) -> bool:
        """Whether to wait for the presence lock before the first registration."""
        return (
            self._lock is not None
            and not self._registered
            and self._present_since() is None
            and time.monotonic() - self._started < _LOCK_WAIT_SECONDS
        )

    def _row(self, lock_key: int | None, stats: WorkerStats) -> dict[str, object]:
        from .. import __version__  # the package imports this module as it loads

        now = utcnow()
        return {
            "id": self.worker_id,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "role": self._role,
            "version": __version__,
            "started_at": self._started_at,
            "heartbeat_at": now,
            "heartbeat_seconds": self.heartbeat_seconds,
            "functions": {kind: self._registry.names(kind) for kind in ("poll", "job", "callback")},
            "in_flight": stats.in_flight,
            "threads_stuck": stats.threads_stuck,
            "lock_key": lock_key,
        }

    def _take_over_lost(self, lock_key: int | None) -> list["TakenOver"]:
        """Hand back the leases of processes whose session ended; forget stale rows."""
        workers, taken = self._stores.workers, []
        present_since = self._present_since()
        if (
            self._lock is not None
            and lock_key is not None
            and present_since is not None
            and time.monotonic() - present_since >= _TRUST_LOCKS_AFTER_SECONDS
        ):
            for worker_id in workers.take_over_unlocked(
                me=self.worker_id,
                lock=self._lock,
                my_period=self.heartbeat_seconds,
                silent_periods=_SILENT_HEARTBEATS,
                settled_seconds=_SERVER_SETTLED_SECONDS,
            ):
                taken.append(self._hand_back(worker_id))
            if taken:
                workers.wake_everyone()  # after the leases were handed back
        # A row whose heartbeat stopped long ago: its leases expire by themselves.
        forget_after = max(self._settings.lease_seconds, _STALE_HEARTBEATS * self.heartbeat_seconds)
        before = utcnow() - timedelta(seconds=forget_after)
        for worker_id in workers.stale(me=self.worker_id, before=before):
            if workers.forget(worker_id):
                logger.info(
                    "forgot process %r: no heartbeat for %.0f s; its leases expire by themselves",
                    worker_id,
                    forget_after,
                    extra={"event": "worker_forgotten", "lost_worker": worker_id},
                )
        return taken

    def _hand_back(self, worker_id: str) -> "TakenOver":
        now = utcnow()
        polls = self._stores.attempts.release_leases(worker=worker_id, now=now)
        runs = self._stores.runs.release_leases(worker=worker_id, now=now)
        return TakenOver(worker_id, polls, runs)

    def _report(self, lost: list["TakenOver"]) -> None:
        """Log and publish each takeover (on the event loop), and wake this engine."""
        for gone in lost:
            self.taken_over += 1
            logger.warning(
                "process %r is gone; its %d polls and %d job runs in flight resume now",
                gone.worker_id,
                gone.polls,
                gone.job_runs,
                extra={
                    "event": "worker_lost",
                    "lost_worker": gone.worker_id,
                    "count": gone.polls + gone.job_runs,
                },
            )
            self._events.publish(
                EventType.WORKER_LOST,
                self.worker_id,
                details={
                    "lost_worker": gone.worker_id,
                    "polls": gone.polls,
                    "job_runs": gone.job_runs,
                },
            )
        if lost:
            self._wake()

    async def leave(self) -> None:
        """Delete this process's row (at shutdown, after its leases were handed back);
        give up after a few seconds: the others forget a silent row by themselves."""
        try:
            async with asyncio.timeout(_LEAVE_SECONDS):
                await run_in(self._pool, self._stores.workers.forget, self.worker_id)
        except (TimeoutError, *DATABASE_ERRORS) as error:
            logger.warning(
                "could not remove this process from the worker registry; the others "
                "forget it once its heartbeat is old: %s",
                error or "no answer in time",
                extra={"event": "worker_leave_failed"},
            )


@dataclass(frozen=True, slots=True)
class TakenOver:
    """A process found gone by this one, and how much of its work was handed back."""

    worker_id: str
    polls: int
    job_runs: int
