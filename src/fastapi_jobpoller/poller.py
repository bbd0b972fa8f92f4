"""`JobPoller`: the one object a host app creates, registers functions on, and starts."""

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio.to_thread
from pydantic import TypeAdapter, ValidationError

from ._apscheduler import first_fire_time, normalize_trigger
from .config import JobPollerSettings
from .database import Database
from .dispatcher import Dispatcher, utcnow
from .exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentsError,
    InvalidTriggerError,
    JobNotFoundError,
    NotRunningError,
    PayloadTooLargeError,
    PollNotFoundError,
)
from .job_store import TRIGGER_ADAPTER, JobStore
from .models import (
    Health,
    JobInfo,
    JobRunInfo,
    PollInfo,
    PollOptions,
    PollState,
    Trigger,
)
from .poll_store import PollStore
from .registry import Registry

__all__ = ["JobPoller"]

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Ids are stored in VARCHAR(191) columns.
_MAX_ID_LENGTH = 191
# `wait_for_poll` looks at the row after 50 ms, then less and less often, up to every
# half second: quick answers for quick polls, little load from many long waits.
_WAIT_FIRST_SECONDS = 0.05
_WAIT_LONGEST_SECONDS = 0.5
# A health check whose query takes longer than this reports the database as down.
_HEALTH_QUERY_SECONDS = 2.0
_POLL_OPTIONS_ADAPTER: TypeAdapter[PollOptions] = TypeAdapter(PollOptions)


def _check_id(kind: str, value: str) -> str:
    # PostgreSQL cannot store a NUL character in a text column.
    if not value or len(value) > _MAX_ID_LENGTH or value.strip() != value or "\x00" in value:
        raise InvalidArgumentsError(
            f"a {kind} id must be 1 to {_MAX_ID_LENGTH} characters without surrounding "
            "spaces or NUL characters"
        )
    return value


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


class JobPoller:
    """Persisted per-request polls and scheduled jobs for one app.

    Args:
        settings: Settings to use; by default read from `JOBPOLLER_*` env vars.
        **overrides: Individual settings that win over `settings` and the environment,
            e.g. `JobPoller(database_url="postgresql+psycopg://...")`.

    Use `async with poller:` (or `await poller.start()` / `await poller.shutdown()`).
    Register functions before starting; every process must register the same ones.
    """

    def __init__(self, settings: JobPollerSettings | None = None, /, **overrides: Any) -> None:
        try:
            if settings is None:
                settings = JobPollerSettings(**overrides)
            elif overrides:
                settings = JobPollerSettings(**{**settings.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings: {exc}") from None
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = Registry()
        self._database: Database | None = None
        self._dispatcher: Dispatcher | None = None

    # -- registration ----------------------------------------------------------------

    def poll_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function that checks on outside work and returns an outcome.

        It returns `Pending(...)`, `Done(...)` or `Failed(...)`; an exception counts as
        a transient error. Its parameters, with their type hints, define the JSON
        arguments a poll of it accepts.

        Args:
            name: The stable name stored with each poll (default: the function's name).
            executor: Where a `def` function runs: "thread" (default) or "process".
            max_concurrency: Most attempts of this function running at once here.
        """

        def register(func: F) -> F:
            self._registry.register(
                "poll", func, name=name, executor=executor, max_concurrency=max_concurrency
            )
            return func

        return register

    def job_function(
        self,
        name: str | None = None,
        *,
        executor: Literal["thread", "process"] = "thread",
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function that scheduled jobs can run; same arguments as above."""

        def register(func: F) -> F:
            self._registry.register(
                "job", func, name=name, executor=executor, max_concurrency=max_concurrency
            )
            return func

        return register

    def callback(self, name: str | None = None) -> Callable[[F], F]:
        """Register a terminal callback, called with the final `PollInfo` of a poll."""

        def register(func: F) -> F:
            self._registry.register("callback", func, name=name)
            return func

        return register

    def function_names(self, kind: Literal["poll", "job", "callback"]) -> list[str]:
        """Return the names registered for one kind of function."""
        return self._registry.names(kind)

    # -- lifecycle -------------------------------------------------------------------

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
            in_flight=0 if dispatcher is None else dispatcher.in_flight,
        )

    async def start(self) -> None:
        """Create missing tables and start the engine on the running event loop.

        Raises:
            ConfigurationError: The database URL cannot be used.
            DatabaseUnavailableError: The database could not be reached.
        """
        if self._dispatcher is not None:
            return
        database = Database(
            self.settings.database_url,
            table_prefix=self.settings.table_prefix,
            pool_size=4,
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
        self._dispatcher = Dispatcher(
            settings=self.settings,
            registry=self._registry,
            polls=self._polls,
            jobs=self._jobs,
            worker_id=self.worker_id,
        )
        self._dispatcher.start()
        logger.info(
            "job poller started as %s",
            self.worker_id,
            extra={"event": "scheduler_started", "worker": self.worker_id},
        )

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
        logger.info(
            "job poller stopped", extra={"event": "scheduler_stopped", "worker": self.worker_id}
        )

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

    def _arguments(
        self, kind: Literal["poll", "job"], function: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Validate arguments against the registered function and the size limit."""
        stored = self._registry.get(kind, function).validate_arguments(arguments)
        size = len(json.dumps(stored, separators=(",", ":")).encode())
        if size > self.settings.max_arguments_bytes:
            raise PayloadTooLargeError(
                f"arguments take {size} bytes as JSON; the limit is "
                f"{self.settings.max_arguments_bytes} (max_arguments_bytes)"
            )
        return stored

    def _require_running(self) -> Dispatcher:
        if self._dispatcher is None:
            raise NotRunningError("start the poller first (`async with poller:`)")
        return self._dispatcher

    # -- polls -----------------------------------------------------------------------

    async def start_poll(
        self,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        poll_id: str | None = None,
        options: PollOptions | None = None,
        **option_values: Any,
    ) -> PollInfo:
        """Start polling `function` with `arguments` until it reports an end.

        Submitting an id again returns the stored poll if the function and arguments
        are the same (whatever its state), and raises `PollConflictError` otherwise.

        Args:
            function: A registered poll function's name.
            arguments: JSON arguments, validated against the function's signature.
            poll_id: A stable id (e.g. your request id); default: a new UUID.
            options: Pacing and limits; or give them as keywords (`interval=5`, ...).

        Raises:
            FunctionNotFoundError: No poll function has that name.
            InvalidArgumentsError: The arguments or options are invalid.
            PollConflictError: The id is taken by a different poll.
        """
        info, _ = await self.submit_poll(
            function, arguments, poll_id=poll_id, options=options, **option_values
        )
        return info

    async def submit_poll(
        self,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        poll_id: str | None = None,
        options: PollOptions | None = None,
        **option_values: Any,
    ) -> tuple[PollInfo, bool]:
        """Do what `start_poll` does; also return whether the poll was created now."""
        dispatcher = self._require_running()
        stored_arguments = self._arguments("poll", function, arguments)
        try:
            if options is None:
                options = _POLL_OPTIONS_ADAPTER.validate_python(option_values)
            elif option_values:
                options = PollOptions(**{**options.model_dump(), **option_values})
        except ValidationError as exc:
            raise InvalidArgumentsError(f"invalid poll options: {exc}") from None
        for name in options.callbacks:
            self._registry.get("callback", name)
        now = utcnow()
        settings = self.settings
        timeout = _default(options.timeout, settings.default_poll_timeout)
        row = {
            "id": _check_id("poll", poll_id) if poll_id is not None else uuid.uuid4().hex,
            "function": function,
            "arguments": stored_arguments,
            "state": PollState.PENDING.value,
            "attempts": 0,
            "consecutive_errors": 0,
            "interval": options.interval or settings.default_poll_interval,
            "backoff_factor": options.backoff_factor,
            "max_interval": options.max_interval,
            "jitter": options.jitter,
            "timeout": timeout,
            "max_attempts": options.max_attempts,
            "max_errors": (
                options.max_errors
                if options.max_errors is not None
                else settings.default_max_errors
            ),
            "callbacks": list(options.callbacks),
            "callbacks_pending": False,
            "created_at": now,
            "deadline": None if timeout is None else now + timedelta(seconds=timeout),
            "next_poll_at": now + timedelta(seconds=options.delay),
            "finished_at": None,
            "updated_at": now,
            "progress": None,
            "result": None,
            "error": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        stored, created = await anyio.to_thread.run_sync(self._polls.insert, row)
        if created:
            dispatcher.wake()
            logger.debug(
                "poll %s submitted",
                row["id"],
                extra={"event": "poll_submitted", "poll_id": row["id"], "function": function},
            )
        return PollInfo.model_validate(stored), created

    async def get_poll(self, poll_id: str) -> PollInfo:
        """Return a poll by id.

        Raises:
            PollNotFoundError: No poll has that id.
        """
        self._require_running()
        row = await anyio.to_thread.run_sync(self._polls.get, poll_id)
        if row is None:
            raise PollNotFoundError(f"no poll has id {poll_id!r}")
        return PollInfo.model_validate(row)

    async def list_polls(
        self,
        *,
        state: PollState | Sequence[PollState] | None = None,
        function: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[PollInfo]:
        """Return polls, newest first, optionally filtered by state(s) and function."""
        self._require_running()
        if limit < 1 or offset < 0:
            raise InvalidArgumentsError("limit must be at least 1 and offset not negative")
        states = () if state is None else (state,) if isinstance(state, PollState) else state
        rows = await anyio.to_thread.run_sync(
            lambda: self._polls.list_polls(
                states=tuple(PollState(s) for s in states),
                function=function,
                limit=limit,
                offset=offset,
            )
        )
        return [PollInfo.model_validate(r) for r in rows]

    async def cancel_poll(self, poll_id: str) -> PollInfo:
        """Cancel a poll; an attempt in flight finishes, but its outcome is dropped.

        Raises:
            PollNotFoundError: No poll has that id.
            InvalidStateError: The poll has already ended.
        """
        dispatcher = self._require_running()
        row = await anyio.to_thread.run_sync(self._polls.cancel, poll_id, utcnow())
        dispatcher.wake()
        logger.info(
            "poll %s cancelled", poll_id, extra={"event": "poll_cancelled", "poll_id": poll_id}
        )
        return PollInfo.model_validate(row)

    # It returns the poll as it is when the time is up instead of raising, so `timeout`
    # is a parameter rather than a cancel scope the caller wraps around it.
    async def wait_for_poll(self, poll_id: str, *, timeout: float) -> PollInfo:  # noqa: ASYNC109
        """Return the poll once it has ended and its callbacks ran, or after `timeout` s.

        Raises:
            PollNotFoundError: No poll has that id.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout
        pause = _WAIT_FIRST_SECONDS
        while True:
            poll = await self.get_poll(poll_id)
            if (poll.is_terminal and not poll.callbacks_pending) or loop.time() >= give_up_at:
                return poll
            await asyncio.sleep(min(pause, max(give_up_at - loop.time(), 0)))
            pause = min(pause * 1.5, _WAIT_LONGEST_SECONDS)

    # -- scheduled jobs --------------------------------------------------------------

    async def add_job(
        self,
        function: str,
        trigger: Trigger | Mapping[str, Any],
        *,
        arguments: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        replace_existing: bool = False,
        paused: bool = False,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        max_instances: int | None = None,
    ) -> JobInfo:
        """Schedule a registered job function on an interval, cron or date trigger.

        Raises:
            FunctionNotFoundError: No job function has that name.
            InvalidArgumentsError: The arguments or limits are invalid.
            InvalidTriggerError: The trigger is invalid.
            JobConflictError: The id is taken and `replace_existing` is false.
        """
        dispatcher = self._require_running()
        stored_arguments = self._arguments("job", function, arguments)
        now = utcnow()
        spec = self._trigger(trigger, now)
        settings = self.settings
        grace = _default(misfire_grace_time, settings.misfire_grace_time)
        instances = _default(max_instances, settings.max_instances)
        if grace < 0 or instances < 1:
            raise InvalidArgumentsError("misfire_grace_time must be ≥ 0 and max_instances ≥ 1")
        row = {
            "id": _check_id("job", job_id) if job_id is not None else uuid.uuid4().hex,
            "function": function,
            "arguments": stored_arguments,
            "trigger": spec.model_dump(mode="json"),
            "next_run_at": None
            if paused
            else first_fire_time(spec, default_zone=settings.timezone, now=now),
            "paused": paused,
            "misfire_grace_time": grace,
            "coalesce": _default(coalesce, settings.coalesce),
            "max_instances": instances,
            "created_at": now,
            "updated_at": now,
        }
        stored = await anyio.to_thread.run_sync(
            lambda: self._jobs.insert(row, replace_existing=replace_existing)
        )
        dispatcher.wake()
        logger.info("job %s added", row["id"], extra={"event": "job_added", "job_id": row["id"]})
        return JobInfo.model_validate(stored)

    def _trigger(self, trigger: Trigger | Mapping[str, Any], now: datetime) -> Trigger:
        try:
            spec = TRIGGER_ADAPTER.validate_python(trigger)
        except ValidationError as exc:
            raise InvalidTriggerError(f"invalid trigger: {exc}") from None
        return normalize_trigger(spec, default_zone=self.settings.timezone, now=now)

    async def get_job(self, job_id: str) -> JobInfo:
        """Return a scheduled job by id.

        Raises:
            JobNotFoundError: No job has that id.
        """
        self._require_running()
        return JobInfo.model_validate(await anyio.to_thread.run_sync(self._jobs.get, job_id))

    async def list_jobs(
        self, *, function: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobInfo]:
        """Return scheduled jobs ordered by id."""
        self._require_running()
        if limit < 1 or offset < 0:
            raise InvalidArgumentsError("limit must be at least 1 and offset not negative")
        rows = await anyio.to_thread.run_sync(
            lambda: self._jobs.list_jobs(function=function, limit=limit, offset=offset)
        )
        return [JobInfo.model_validate(r) for r in rows]

    async def remove_job(self, job_id: str) -> None:
        """Delete a scheduled job; its run history stays.

        Raises:
            JobNotFoundError: No job has that id.
        """
        self._require_running()
        await anyio.to_thread.run_sync(self._jobs.delete, job_id)
        logger.info("job %s removed", job_id, extra={"event": "job_removed", "job_id": job_id})

    async def pause_job(self, job_id: str) -> JobInfo:
        """Stop a job's ticks until it is resumed."""
        return await self._set_paused(job_id, paused=True)

    async def resume_job(self, job_id: str) -> JobInfo:
        """Resume a paused job from its next tick after now."""
        return await self._set_paused(job_id, paused=False)

    async def _set_paused(self, job_id: str, *, paused: bool) -> JobInfo:
        dispatcher = self._require_running()
        row = await anyio.to_thread.run_sync(
            lambda: self._jobs.set_paused(job_id, paused=paused, now=utcnow())
        )
        dispatcher.wake()
        event = "job_paused" if paused else "job_resumed"
        logger.info("job %s %s", job_id, event[4:], extra={"event": event, "job_id": job_id})
        return JobInfo.model_validate(row)

    async def reschedule_job(self, job_id: str, trigger: Trigger | Mapping[str, Any]) -> JobInfo:
        """Replace a job's trigger; a paused job stays paused.

        Raises:
            JobNotFoundError: No job has that id.
            InvalidTriggerError: The trigger is invalid.
        """
        return await self.modify_job(job_id, trigger=trigger)

    async def modify_job(
        self,
        job_id: str,
        *,
        trigger: Trigger | Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        max_instances: int | None = None,
    ) -> JobInfo:
        """Change what is given of a job; a new trigger restarts its schedule from now.

        Raises:
            JobNotFoundError: No job has that id.
            InvalidArgumentsError: The arguments or limits are invalid.
            InvalidTriggerError: The trigger is invalid.
        """
        dispatcher = self._require_running()
        now = utcnow()
        spec = None if trigger is None else self._trigger(trigger, now)
        if misfire_grace_time is not None and misfire_grace_time < 0:
            raise InvalidArgumentsError("misfire_grace_time must be ≥ 0")
        if max_instances is not None and max_instances < 1:
            raise InvalidArgumentsError("max_instances must be ≥ 1")
        values: dict[str, Any] = {
            key: value
            for key, value in (
                ("misfire_grace_time", misfire_grace_time),
                ("coalesce", coalesce),
                ("max_instances", max_instances),
            )
            if value is not None
        }

        def modify() -> dict[str, Any]:
            if arguments is not None:
                function = self._jobs.get(job_id)["function"]
                values["arguments"] = self._arguments("job", function, arguments)
            return self._jobs.modify(job_id, trigger=spec, values=values, now=now)

        row = await anyio.to_thread.run_sync(modify)
        dispatcher.wake()
        logger.info("job %s modified", job_id, extra={"event": "job_modified", "job_id": job_id})
        return JobInfo.model_validate(row)

    async def run_job_now(self, job_id: str) -> JobRunInfo:
        """Queue one extra run of a job right away; its schedule is unchanged.

        Raises:
            JobNotFoundError: No job has that id.
        """
        dispatcher = self._require_running()
        run = await anyio.to_thread.run_sync(lambda: self._jobs.queue_run(job_id, now=utcnow()))
        dispatcher.wake()
        return JobRunInfo.model_validate(run)

    async def list_job_runs(
        self, *, job_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobRunInfo]:
        """Return the runs of scheduled jobs, latest tick first."""
        self._require_running()
        if limit < 1 or offset < 0:
            raise InvalidArgumentsError("limit must be at least 1 and offset not negative")
        rows = await anyio.to_thread.run_sync(
            lambda: self._jobs.list_runs(job_id=job_id, limit=limit, offset=offset)
        )
        return [JobRunInfo.model_validate(r) for r in rows]

    async def get_job_run(self, run_id: str) -> JobRunInfo:
        """Return one run of a scheduled job.

        Raises:
            JobNotFoundError: No run has that id.
        """
        self._require_running()
        row = await anyio.to_thread.run_sync(self._jobs.get_run, run_id)
        if row is None:
            raise JobNotFoundError(f"no job run has id {run_id!r}")
        return JobRunInfo.model_validate(row)
