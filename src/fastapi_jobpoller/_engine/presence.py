"""Presence: this process's row in the worker registry, and the takeover of lost ones.

Every `heartbeat_seconds` a process refreshes its row (what it registers, its work in
flight, its stuck threads) and looks for lost processes (see `_storage/worker_store.py`).
A process whose session ended is deleted by the one process whose DELETE removes it, which
then hands that process's leases back at once (polls come due now, job runs are queued
again and stop counting towards `max_instances`) and wakes every engine. A row whose
heartbeat stopped long ago is only deleted: its leases expire by themselves.

On PostgreSQL a process is lost when the presence lock of its session is free, so a
killed process's work resumes about one heartbeat after the kill instead of a lease
later. A process only trusts that test once its own lock has been held for a few
seconds: after a database restart every session is new, and the others need a moment to
take their locks again.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta

from .._storage.change_listener import ChangeListener
from .._storage.stores import Stores
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..events import EventType
from .dispatcher import Dispatcher
from .event_bus import EventBus
from .registry import Registry
from .threads import DaemonThreadPool, run_in
from .write_back import DATABASE_ERRORS

__all__ = ["NoEngine", "Presence", "ProcessPresence", "WorkerStats", "presence_lock_keys"]

logger = logging.getLogger(__name__)

# How long this process's own presence lock must have been held before the locks of
# others are trusted: long enough for every process to take its lock again after a
# database restart (their reconnect pause is 2 s).
_TRUST_LOCKS_AFTER_SECONDS = 5.0
# A process whose lock is free is taken over once its heartbeat is this many periods old
# (every process should have the same heartbeat_seconds): one that lost only its
# listening connection goes on beating through its pool, and keeps its work.
_SILENT_HEARTBEATS = 1.5
# Seconds after the database server started during which no lock is trusted: processes
# take their locks again within a couple of seconds of a restart.
_SERVER_SETTLED_SECONDS = 10.0
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
        self._stats = stats
        self._wake = wake
        self.heartbeat_seconds = settings.heartbeat_seconds
        self._started = time.monotonic()
        self._started_at = utcnow()
        self._registered = False
        self._registered_with: int | None = None  # the lock key of the row written
        self.taken_over = 0

    async def loop(self, ready: Callable[[], bool]) -> None:
        """Beat every `heartbeat_seconds` once `ready()` (the tables exist), forever; a
        failed beat is logged once."""
        failing = False
        while True:
            try:
                lost = await run_in(self._pool, self.beat) if ready() else 0
                if lost:
                    self._wake()
                failing = False
            except DATABASE_ERRORS as error:
                if not failing:
                    logger.warning(
                        "could not refresh this process's heartbeat: %s",
                        error,
                        extra={"event": "heartbeat_failed"},
                    )
                failing = True
                self._registered = False  # write the row again once it works
            await asyncio.sleep(self._settings.heartbeat_seconds)

    def beat(self) -> int:
        """Refresh or write this process's row, then take over lost ones (blocking).

        Returns how many processes were taken over.
        """
        if self._waiting_for_lock():
            return 0  # the presence lock is on its way: register with it
        lock_key = self._lock[1] if self._lock and self._present_since() is not None else None
        now, stats = utcnow(), self._stats()
        workers = self._stores.workers
        if (
            not self._registered
            or self._registered_with != lock_key
            or not workers.beat(
                self.worker_id,
                now=now,
                in_flight=stats.in_flight,
                threads_stuck=stats.threads_stuck,
            )
        ):
            workers.register(self._row(lock_key, stats))
            self._registered, self._registered_with = True, lock_key
        alive_after = now - timedelta(seconds=self._settings.lease_seconds)
        self._registry.elsewhere = workers.functions_alive(alive_after=alive_after)
        if self._role == "client":
            return 0
        return self._take_over_lost()

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
            "functions": {kind: self._registry.names(kind) for kind in ("poll", "job", "callback")},
            "in_flight": stats.in_flight,
            "threads_stuck": stats.threads_stuck,
            "lock_key": lock_key,
        }

    def _take_over_lost(self) -> int:
        """Hand back the leases of processes whose session ended; forget stale rows."""
        workers, taken = self._stores.workers, 0
        present_since = self._present_since()
        if (
            self._lock is not None
            and present_since is not None
            and time.monotonic() - present_since >= _TRUST_LOCKS_AFTER_SECONDS
        ):
            silent = _SILENT_HEARTBEATS * self.heartbeat_seconds
            for worker_id in workers.unlocked(
                me=self.worker_id,
                lock=self._lock,
                stale_before=utcnow() - timedelta(seconds=silent),
                settled_seconds=_SERVER_SETTLED_SECONDS,
            ):
                if workers.forget(worker_id, announce=True):
                    self._hand_back(worker_id)
                    taken += 1
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

    def _hand_back(self, worker_id: str) -> None:
        now = utcnow()
        polls = self._stores.attempts.release_leases(worker=worker_id, now=now)
        runs = self._stores.runs.release_leases(worker=worker_id, now=now)
        self.taken_over += 1
        logger.warning(
            "process %r is gone; its %d polls and %d job runs in flight resume now",
            worker_id,
            polls,
            runs,
            extra={"event": "worker_lost", "lost_worker": worker_id, "count": polls + runs},
        )
        self._events.publish(
            EventType.WORKER_LOST,
            self.worker_id,
            details={"lost_worker": worker_id, "polls": polls, "job_runs": runs},
        )

    async def leave(self) -> None:
        """Delete this process's row (at shutdown, after its leases were handed back)."""
        try:
            await run_in(self._pool, self._stores.workers.forget, self.worker_id)
        except DATABASE_ERRORS as error:
            logger.warning(
                "could not remove this process from the worker registry; the others "
                "forget it once its heartbeat is old: %s",
                error,
                extra={"event": "worker_leave_failed"},
            )


class NoEngine:
    """What a client process wakes instead of an engine: nothing (NOTIFY wakes the others)."""

    def wake(self, jobs: bool = True) -> None:
        """Do nothing: this process runs no engine."""


class ProcessPresence:
    """This process in the registry: its heartbeat task and, on PostgreSQL with an engine,
    the connection that listens for changes and holds the presence lock."""

    def __init__(
        self,
        presence: Presence,
        *,
        listener: ChangeListener | None,
        pool: DaemonThreadPool,
        startup: Callable[[], Awaitable[None]] | None,
        ready: Callable[[], bool],
    ) -> None:
        self.presence = presence
        self._listener = listener
        self._pool = pool
        self._task = asyncio.create_task(self._run(startup, ready), name="jobpoller-presence")

    @classmethod
    def start(
        cls,
        *,
        settings: JobPollerSettings,
        stores: Stores,
        registry: Registry,
        events: EventBus,
        worker_id: str,
        role: str,
        dispatcher: Dispatcher | None,
        startup: Callable[[], Awaitable[None]] | None,
        ready: Callable[[], bool],
    ) -> "ProcessPresence":
        """Start the heartbeat (and the listener); `startup` is retried first (client)."""
        database, listener, lock = stores.database, None, None
        if dispatcher is not None and database.notifies:
            lock = presence_lock_keys(settings.table_prefix)
            loop = asyncio.get_running_loop()

            def wake_from_thread(subject: str) -> None:
                # A notification may arrive while the app's loop is closing: nothing to wake.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(dispatcher.wake, subject != "polls")

            listener = ChangeListener(
                database.url, database.change_channel, wake_from_thread, presence_lock=lock
            )
            listener.start()
        pool = DaemonThreadPool(1, name="jobpoller-presence")
        presence = Presence(
            settings=settings,
            stores=stores,
            registry=registry,
            events=events,
            worker_id=worker_id,
            role=role,
            database_pool=pool,
            lock=lock,
            present_since=(lambda: listener.present_since) if listener else (lambda: None),
            stats=(
                (lambda: WorkerStats(dispatcher.in_flight, dispatcher.threads.stuck))
                if dispatcher
                else WorkerStats
            ),
            wake=dispatcher.wake if dispatcher else NoEngine().wake,
        )
        return cls(presence, listener=listener, pool=pool, startup=startup, ready=ready)

    async def _run(
        self, startup: Callable[[], Awaitable[None]] | None, ready: Callable[[], bool]
    ) -> None:
        pause = self.presence.heartbeat_seconds
        while startup is not None and not ready():
            try:
                await startup()
            except DATABASE_ERRORS:
                await asyncio.sleep(pause)  # start() logged why, once
        await self.presence.loop(ready)

    async def stop(self) -> None:
        """Stop the heartbeat, leave the registry, close the listening connection."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.presence.leave()
        if self._listener is not None:
            self._listener.stop()
        self._pool.shutdown(wait=False)
