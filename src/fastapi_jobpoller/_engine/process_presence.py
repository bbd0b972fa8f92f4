"""This process's presence, assembled: the heartbeat task of `presence.py` and, for an
engine on PostgreSQL, the listening connection that holds its presence lock."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .._storage.change_listener import ChangeListener
from .._storage.stores import Stores
from ..config import JobPollerSettings
from .dispatcher import Dispatcher
from .event_bus import EventBus
from .presence import Presence, WorkerStats, presence_lock_keys
from .registry import Registry
from .threads import DaemonThreadPool
from .write_back import DATABASE_ERRORS

__all__ = ["NoEngine", "ProcessPresence"]

logger = logging.getLogger(__name__)

# Pause between two tries of a client's start-up that failed for another reason than
# the database being away.
_STARTUP_RETRY_SECONDS = 5.0


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
            lock_lost=listener.reconnect if listener else (lambda: None),
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
        pause, said = self.presence.heartbeat_seconds, False
        while startup is not None and not ready():
            try:
                await startup()
            except DATABASE_ERRORS:
                await asyncio.sleep(pause)  # start() logged why, once
            except Exception:  # e.g. a declared job the database refuses: say it, go on
                if not said:
                    logger.exception(
                        "this client could not prepare the database; trying again",
                        extra={"event": "startup_failed"},
                    )
                said = True
                await asyncio.sleep(max(pause, _STARTUP_RETRY_SECONDS))
        await self.presence.loop(ready)

    async def stop(self) -> None:
        """Stop the heartbeat, leave the registry, close the listening connection."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.presence.leave()
        if self._listener is not None:
            self._listener.stop()
        self._pool.shutdown(wait=False)
