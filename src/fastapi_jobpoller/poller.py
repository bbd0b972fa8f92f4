"""`JobPoller`: the one object a host app creates, registers functions on, and starts.

This module holds registration, listeners, the lifecycle and health; the poll methods
are in `_poll_methods.py`, the job methods in `_job_methods.py`, the state they share in
`_poller_base.py`.
"""

import logging
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.to_thread

from ._engine.dispatcher import Dispatcher
from ._engine.process_presence import ProcessPresence
from ._health import assess
from ._job_methods import JobMethods
from ._poll_methods import PollMethods
from ._poller_base import check_page, in_thread
from ._storage.database import Database
from ._storage.stores import Stores
from ._storage.tables import utcnow
from .events import EventType, Listener
from .exceptions import ConfigurationError, DatabaseUnavailableError
from .models import Health, QuarantinedRow, WorkerInfo

__all__ = ["JobPoller"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
L = TypeVar("L", bound=Listener)

# A health check whose query takes longer than this reports the database as down.
_HEALTH_QUERY_SECONDS = 2.0


class JobPoller(PollMethods, JobMethods):
    """Persisted per-request polls and scheduled jobs for one app.

    Args:
        settings: Settings to use; by default read from `JOBPOLLER_*` env vars.
        **overrides: Individual settings that win over `settings` and the environment,
            e.g. `JobPoller(database_url="postgresql+psycopg://...")`.

    Use `async with poller:` (or `await poller.start()` / `await poller.shutdown()`).
    Register functions before starting; every process must register the same ones.
    """

    # -- registration ----------------------------------------------------------------

    @overload
    def poll_function(self, name: F, /) -> F: ...

    @overload
    def poll_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]: ...

    def poll_function(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Any:
        """Register a function that checks on outside work and returns an outcome.

        It returns `Pending(...)`, `Done(...)` or `Failed(...)`; an exception counts as
        a transient error. Its parameters, with their type hints, define the JSON
        arguments a poll of it accepts. Use it as `@poller.poll_function()`, with
        arguments, or bare: `@poller.poll_function`.

        Args:
            name: The stable name stored with each poll (default: the function's name).
            executor: Where a `def` function runs: "thread" (default) or "process".
            max_concurrency: Most attempts of this function running at once here.
        """
        return self._register("poll", name, executor=executor, max_concurrency=max_concurrency)

    @overload
    def job_function(self, name: F, /) -> F: ...

    @overload
    def job_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]: ...

    def job_function(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Any:
        """Register a function that scheduled jobs can run; same arguments as `poll_function`."""
        return self._register("job", name, executor=executor, max_concurrency=max_concurrency)

    @overload
    def callback(self, name: F, /) -> F: ...

    @overload
    def callback(self, name: str | None = None) -> Callable[[F], F]: ...

    def callback(self, name: str | Callable[..., Any] | None = None) -> Any:
        """Register a terminal callback, called with the final `PollInfo` of a poll."""
        return self._register("callback", name)

    def _register(
        self,
        kind: Literal["poll", "job", "callback"],
        name: str | Callable[..., Any] | None,
        **options: Any,
    ) -> Any:
        if callable(name):  # used bare, as `@poller.poll_function`: `name` is the function
            self._registry.register(kind, name, **options)
            return name

        def register(func: F) -> F:
            self._registry.register(kind, func, name=name, **options)
            return func

        return register

    def function_names(self, kind: Literal["poll", "job", "callback"]) -> list[str]:
        """Return the names registered for one kind of function."""
        return self._registry.names(kind)

    # -- listeners -------------------------------------------------------------------

    def add_listener(self, listener: Listener, *types: EventType | str) -> None:
        """Call `listener` with every `Event` of the given types (all if none given).

        `async def` listeners are awaited, `def` ones run on a thread; either way they
        run off the engine's path, and an exception is logged, never raised.
        """
        self._events.subscribe(listener, [EventType(t) for t in types])

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        self._events.unsubscribe(listener)

    def on(self, *types: EventType | str) -> Callable[[L], L]:
        """Decorator form of `add_listener`."""

        def subscribe(listener: L) -> L:
            self.add_listener(listener, *types)
            return listener

        return subscribe

    # -- state -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Return whether the poller is started."""
        return self._started

    @property
    def role(self) -> Literal["engine", "worker", "client"]:
        """Return what this process is: `engine` (an app that runs the engine too),
        `worker` (the engine alone: `python -m fastapi_jobpoller worker`) or `client`
        (`run_engine` off: it submits and reads, engines elsewhere do the work)."""
        return self._engine_role if self.settings.run_engine else "client"

    @property
    def engine_alive(self) -> bool:
        """Return whether the dispatch loop really runs (not merely a started flag)."""
        return self._dispatcher is not None and self._dispatcher.alive

    @property
    def database_ok(self) -> bool:
        """Return whether the engine's last database call worked."""
        return self._dispatcher is not None and self._dispatcher.cycles.database_ok

    @property
    def in_flight(self) -> int:
        """Return how many attempts and job runs this process is executing."""
        return 0 if self._dispatcher is None else self._dispatcher.in_flight

    async def health(self) -> Health:
        """Check the engine loop and run a query against the database.

        `status` is `ok` when all is well, `degraded` when the engine works but something
        needs a look, `unavailable` when it cannot make progress; `problems` says why.
        """
        database, quarantined, workers = self._database, None, None
        database_ok = False
        if database is not None:
            try:
                with anyio.fail_after(_HEALTH_QUERY_SECONDS):
                    quarantined, workers = await anyio.to_thread.run_sync(
                        self._probe, database, abandon_on_cancel=True
                    )
                database_ok = True
            except (DatabaseUnavailableError, TimeoutError):
                database_ok = False
        return assess(
            self._dispatcher,
            database_ok=database_ok,
            schema_ready=self._schema_ready,
            worker_id=self.worker_id,
            role=self.role,
            quarantined=quarantined,
            workers=workers,
        )

    def _probe(self, database: Database) -> tuple[int | None, int | None]:
        """Query the database: rows set aside, live workers (None before the tables are)."""
        if not self._schema_ready:
            database.ping()
            return None, None
        quarantined = sum(self._quarantine.count().values())
        return quarantined, sum(w.alive for w in self._workers_now())

    def _workers_now(self) -> list[WorkerInfo]:
        now, rows = utcnow(), self._workers.list_rows()
        fresh = timedelta(seconds=self.settings.lease_seconds)  # as the others judge it
        return [WorkerInfo(**row, alive=now - row["heartbeat_at"] <= fresh) for row in rows]

    async def list_workers(self) -> list[WorkerInfo]:
        """Return the processes in the worker registry, oldest first, this one included.

        Each engine and client registers itself at start and refreshes its row every
        `heartbeat_seconds`; a process that stopped leaves; one that died is removed by
        an engine (on PostgreSQL within about two heartbeats, as it takes its work over;
        elsewhere once silent for `lease_seconds`).
        """
        self._require_running()
        return await in_thread(self._workers_now)

    async def list_quarantined(
        self, *, kind: Literal["poll", "job"] | None = None, limit: int = 100, offset: int = 0
    ) -> list[QuarantinedRow]:
        """Return the polls and jobs set aside because their stored rows cannot be used.

        A job stays stored as it was, a poll is parked (no next attempt); either resumes
        by itself once fixed (through the API,
        e.g. `modify_job` with a new trigger, or in the database): see docs/failures.md.
        """
        self._require_running()
        check_page(limit, offset)
        rows = await in_thread(
            lambda: self._quarantine.list_records(kind=kind, limit=limit, offset=offset)
        )
        return [QuarantinedRow.model_validate({**row, "id": row["row_id"]}) for row in rows]

    async def start(self) -> None:
        """Start the engine on the running event loop; starting twice does nothing.

        Missing tables are created (unless `create_tables` is off) and the jobs given
        to `declare_job` are created or updated. If the database cannot be reached,
        the poller still starts, degraded: the engine keeps retrying, `health()` says
        unavailable, and calls raise `DatabaseUnavailableError` until it is back. The
        driver's reason is logged (password masked).

        Raises:
            ConfigurationError: The database URL or the stored schema cannot be used,
                the SQLite file's folder does not exist, or the server refused us for
                good (an unknown database or user, a wrong password).
        """
        if self._dispatcher is not None:
            return
        database = Database(
            self.settings.database_url,
            table_prefix=self.settings.table_prefix,
            pool_size=self.settings.database_pool_size,
        )
        self._database = database
        stores = Stores.open(database, default_zone=self.settings.timezone)
        self._polls, self._jobs, self._runs = stores.polls, stores.jobs, stores.runs
        self._history, self._quarantine = stores.history, stores.quarantine
        self._workers = stores.workers
        self._schema_ready = False
        self._events.start()
        engine = self.settings.run_engine
        dispatcher = (
            Dispatcher(
                settings=self.settings,
                registry=self._registry,
                events=self._events,
                stores=stores,
                worker_id=self.worker_id,
                startup=self._prepare_database,
            )
            if engine
            else None
        )
        self._dispatcher, self._started = dispatcher, True
        try:
            ready = await self._database_ready()
        except BaseException:
            self._dispatcher, self._started = None, False
            self._database = None
            database.dispose()
            await self._events.stop()
            raise
        if dispatcher is not None:
            if ready:
                dispatcher.mark_ready()
            dispatcher.start()
        self._presence = self._start_presence(stores, dispatcher)
        self._emit(EventType.SCHEDULER_STARTED)

    def _start_presence(self, stores: Stores, dispatcher: Dispatcher | None) -> ProcessPresence:
        """Register this process and keep it registered (and, on PostgreSQL, present)."""
        return ProcessPresence.start(
            settings=self.settings,
            stores=stores,
            registry=self._registry,
            events=self._events,
            worker_id=self.worker_id,
            role=self.role,
            dispatcher=dispatcher,
            # A client has no engine to retry the start-up while the database is down.
            startup=None if dispatcher else self._prepare_database,
            ready=lambda: self._schema_ready,
        )

    async def _database_ready(self) -> bool:
        """Prepare the database; False if it is down (the engine retries, degraded).

        Raises:
            ConfigurationError: The server refused us for good (unknown database or
                user, wrong password): no retry would ever succeed.
        """
        try:
            await self._prepare_database()
        except DatabaseUnavailableError as error:
            if error.permanent:
                raise ConfigurationError(
                    f"cannot use the database at JOBPOLLER_DATABASE_URL: {error.reason}"
                ) from None
            logger.error(
                "database unreachable at start; serving degraded while the engine retries: %s",
                error.reason,
                extra={"event": "database_unavailable"},
            )
            return False
        return True

    async def _prepare_database(self) -> None:
        """Create or check the tables, then apply the declared jobs."""
        database = self._database
        assert database is not None
        if self.settings.create_tables:
            await anyio.to_thread.run_sync(database.create_schema)
        else:
            await anyio.to_thread.run_sync(database.check_schema)
        self._schema_ready = True
        await self._apply_declared_jobs()

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop claiming work, wait up to `grace` seconds for work in flight, stop.

        Work still running after the grace period is abandoned; its leases are handed
        back so another process (or the next start) runs it again.
        """
        dispatcher, database, presence = self._dispatcher, self._database, self._presence
        if not self._started or database is None:
            return
        self._dispatcher, self._presence, self._started = None, None, False
        if dispatcher is not None:
            await dispatcher.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        if presence is not None:
            await presence.stop()  # after the leases were handed back
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
