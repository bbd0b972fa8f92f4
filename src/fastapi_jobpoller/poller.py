"""`JobPoller`: the one object a host app creates, registers functions on, and starts."""

from types import TracebackType

import anyio
import anyio.to_thread

from .database import Database
from .dispatcher import Dispatcher
from .events import EventType
from .exceptions import DatabaseUnavailableError
from .history import HistoryStore
from .job_api import JobOperations
from .job_store import JobStore
from .models import Health
from .poll_api import PollOperations
from .poll_store import PollStore

__all__ = ["JobPoller"]

# A health check whose query takes longer than this reports the database as down.
_HEALTH_QUERY_SECONDS = 2.0


class JobPoller(PollOperations, JobOperations):
    """Persisted per-request polls and scheduled jobs for one app.

    Args:
        settings: Settings to use; by default read from `JOBPOLLER_*` env vars.
        **overrides: Individual settings that win over `settings` and the environment,
            e.g. `JobPoller(database_url="postgresql+psycopg://...")`.

    Use `async with poller:` (or `await poller.start()` / `await poller.shutdown()`).
    Register functions before starting; every process must register the same ones.
    """

    @property
    def running(self) -> bool:
        """Return whether the poller is started."""
        return self._dispatcher is not None

    @property
    def engine_alive(self) -> bool:
        """Return whether the dispatch loop really runs (not merely a started flag)."""
        return self._dispatcher is not None and self._dispatcher.alive

    @property
    def database_ok(self) -> bool:
        """Return whether the engine's last database call worked."""
        return self._dispatcher is not None and self._dispatcher.database_ok

    @property
    def in_flight(self) -> int:
        """Return how many attempts and job runs this process is executing."""
        return 0 if self._dispatcher is None else self._dispatcher.in_flight

    async def health(self) -> Health:
        """Check the engine loop and run a query against the database."""
        dispatcher, database = self._dispatcher, self._database
        database_ok = False
        if database is not None:
            try:
                with anyio.fail_after(_HEALTH_QUERY_SECONDS):
                    await anyio.to_thread.run_sync(database.ping, abandon_on_cancel=True)
                database_ok = True
            except (DatabaseUnavailableError, TimeoutError):
                database_ok = False
        engine_alive = dispatcher is not None and dispatcher.alive
        return Health(
            status="ok" if engine_alive and database_ok else "unavailable",
            engine_alive=engine_alive,
            database_ok=database_ok,
            worker_id=self.worker_id,
            in_flight=self.in_flight,
        )

    async def start(self) -> None:
        """Create missing tables, start the engine on the running event loop, and
        create or update the jobs given to `declare_job`. Starting twice does nothing.

        Raises:
            ConfigurationError: The database URL or the stored schema cannot be used.
            DatabaseUnavailableError: The database could not be reached.
        """
        if self._dispatcher is not None:
            return
        database = Database(
            self.settings.database_url,
            table_prefix=self.settings.table_prefix,
            pool_size=self.settings.database_pool_size,
        )
        try:
            if self.settings.create_tables:
                await anyio.to_thread.run_sync(database.create_schema)
            else:
                await anyio.to_thread.run_sync(database.check_schema)
        except BaseException:
            database.dispose()
            raise
        self._database = database
        self._polls = PollStore(database)
        self._jobs = JobStore(database, default_zone=self.settings.timezone)
        self._history = HistoryStore(database)
        self._events.start()
        self._dispatcher = Dispatcher(
            settings=self.settings,
            registry=self._registry,
            events=self._events,
            polls=self._polls,
            jobs=self._jobs,
            history=self._history,
            worker_id=self.worker_id,
        )
        self._dispatcher.start()
        self._emit(EventType.SCHEDULER_STARTED)
        try:
            await self._apply_declared_jobs()
        except BaseException:
            await self.shutdown()
            raise

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop claiming work, wait up to `grace` seconds for work in flight, stop.

        Work still running after the grace period is abandoned; its leases are handed
        back so another process (or the next start) runs it again.
        """
        dispatcher, database = self._dispatcher, self._database
        if dispatcher is None or database is None:
            return
        self._dispatcher = None
        await dispatcher.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        database.dispose()
        self._database = None
        self._emit(EventType.SCHEDULER_STOPPED)
        await self._events.stop()

    async def __aenter__(self) -> "JobPoller":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.shutdown()
