"""The scheduled-job half of `JobPoller`: define, change, pause and inspect jobs."""

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ._apscheduler import check_trigger, first_fire_time, normalize_trigger
from ._habits import explain_apscheduler_habits
from ._poller_base import JobDeclaration, PollerBase, check_id, check_page, default, in_thread
from ._rows import read_row
from ._rules.job_definitions import (
    DateInPastError,
    refuse_a_missed_date,
    same_definition,
    same_schedule,
    validated_trigger,
)
from ._storage.tables import utcnow
from .events import EventType
from .exceptions import (
    ConfigurationError,
    FunctionNotFoundError,
    InvalidArgumentsError,
    InvalidTriggerError,
    JobAlreadyRanError,
    JobConflictError,
    JobNotFoundError,
)
from .models import JobInfo, JobRunInfo, JobRunState
from .triggers import DateTrigger, Trigger

__all__ = ["JobMethods"]

logger = logging.getLogger("fastapi_jobpoller.poller")


class JobMethods(PollerBase):
    """Scheduled jobs."""

    @explain_apscheduler_habits
    def declare_job(
        self,
        job_id: str,
        function: str,
        trigger: Trigger | Mapping[str, Any],
        *,
        arguments: Mapping[str, Any] | None = None,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        max_instances: int | None = None,
    ) -> None:
        """Declare a job that must exist whenever the poller runs (call before start).

        At every start the job is created if missing; if it exists with another
        function, trigger, arguments or limits, those are updated (a changed trigger
        restarts its schedule). Its paused state and unchanged schedule are kept, so a
        deploy neither resets timers nor undoes a pause made at runtime.

        Raises:
            ConfigurationError: The poller is already running, or the id is declared.
            InvalidTriggerError: The trigger is invalid (the message names the job).
        """
        if self._started:
            raise ConfigurationError("declare jobs before start; use add_job on a running poller")
        check_id("job", job_id)
        if job_id in self._declared_jobs:
            raise ConfigurationError(f"job {job_id!r} is declared already")
        try:
            check_trigger(validated_trigger(trigger), default_zone=self.settings.timezone)
        except InvalidTriggerError as error:
            raise InvalidTriggerError(f"declared job {job_id!r}: {error}") from None
        options = {
            "misfire_grace_time": misfire_grace_time,
            "coalesce": coalesce,
            "max_instances": max_instances,
        }
        self._declared_jobs[job_id] = JobDeclaration(job_id, function, trigger, arguments, options)

    async def _apply_declared_jobs(self) -> None:
        for declared in self._declared_jobs.values():
            try:
                await self._apply_declaration(declared)
            except JobAlreadyRanError as error:
                logger.info(
                    "declared job %r is not added again: %s",
                    declared.job_id,
                    error,
                    extra={"event": "job_declaration_spent", "job_id": declared.job_id},
                )
            except DateInPastError as error:
                logger.warning(
                    "declared job %r is not added: %s",
                    declared.job_id,
                    error,
                    extra={"event": "job_declaration_spent", "job_id": declared.job_id},
                )
            except FunctionNotFoundError as error:
                if self.settings.run_engine:
                    error.args = (f"declared job {declared.job_id!r}: {error}", *error.args[1:])
                    raise
                # A client: the engine processes, which register it, declare the job too.
                logger.info(
                    "declared job %r is left to the engine processes: %s",
                    declared.job_id,
                    error,
                    extra={"event": "job_declaration_deferred", "job_id": declared.job_id},
                )
            except (InvalidArgumentsError, InvalidTriggerError) as error:
                # The start fails on it: the message says which declaration.
                error.args = (f"declared job {declared.job_id!r}: {error}", *error.args[1:])
                raise

    async def _apply_declaration(self, declared: JobDeclaration) -> None:
        """Create the declared job, or bring the stored one in line with the declaration."""
        try:
            existing = await self.get_job(declared.job_id)
        except JobNotFoundError:
            try:
                await self.add_job(
                    declared.function,
                    declared.trigger,
                    arguments=declared.arguments,
                    job_id=declared.job_id,
                    **declared.options,
                )
                return
            except JobAlreadyRanError:
                raise
            except JobConflictError:  # another process, starting too, added it first
                existing = await self.get_job(declared.job_id)
        wanted = validated_trigger(declared.trigger)
        arguments = self._arguments("job", declared.function, declared.arguments)
        options = self._limits(**declared.options)
        if not same_definition(existing, declared.function, arguments, wanted, options):
            same_trigger = same_schedule(existing.trigger, wanted)
            await self.modify_job(
                declared.job_id,
                function=declared.function,
                trigger=None if same_trigger else wanted,
                arguments=arguments,
                **options,
            )

    def _limits(
        self,
        *,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        max_instances: int | None = None,
    ) -> dict[str, Any]:
        """Return a job's misfire grace time, coalescing and max instances, defaults filled."""
        settings = self.settings
        limits = {
            "misfire_grace_time": default(misfire_grace_time, settings.misfire_grace_time),
            "coalesce": default(coalesce, settings.coalesce),
            "max_instances": default(max_instances, settings.max_instances),
        }
        if limits["misfire_grace_time"] < 0 or limits["max_instances"] < 1:
            raise InvalidArgumentsError("misfire_grace_time must be ≥ 0 and max_instances ≥ 1")
        return limits

    @explain_apscheduler_habits
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
            InvalidTriggerError: The trigger is invalid or never fires.
            JobConflictError: The id is taken by a different job and `replace_existing` is
                false (the same job added again is returned as it is stored).
            JobAlreadyRanError: A date job with this id already ran at this run date.
        """
        dispatcher = self._require_running()
        stored_arguments = await self._checked_arguments("job", function, arguments)
        now = utcnow()
        requested = validated_trigger(trigger)
        spec = await self._trigger(requested, now)
        limits = self._limits(
            misfire_grace_time=misfire_grace_time, coalesce=coalesce, max_instances=max_instances
        )
        zone = self.settings.timezone
        first_tick = await in_thread(lambda: first_fire_time(spec, default_zone=zone, now=now))
        row = {
            "id": check_id("job", job_id) if job_id is not None else uuid.uuid4().hex,
            "function": function,
            "arguments": stored_arguments,
            "trigger": spec.model_dump(mode="json"),
            "next_run_at": None if paused else first_tick,
            "paused": paused,
            **limits,
            "created_at": now,
            "updated_at": now,
        }
        if isinstance(spec, DateTrigger) and job_id is not None and first_tick is not None:
            await self._refuse_a_spent_date(job_id, first_tick)
        if isinstance(spec, DateTrigger) and first_tick is not None:
            refuse_a_missed_date(first_tick, now, limits["misfire_grace_time"])
        try:
            stored = await in_thread(
                lambda: self._jobs.insert(row, replace_existing=replace_existing)
            )
        except JobConflictError:
            existing = await self.get_job(row["id"])
            if same_definition(existing, function, stored_arguments, requested, limits):
                return existing  # the same job added again: nothing to do
            raise
        dispatcher.wake()
        self._emit(EventType.JOB_ADDED, job_id=row["id"], function=function)
        return read_row(JobInfo, stored)

    async def _refuse_a_spent_date(self, job_id: str, run_date: datetime) -> None:
        """Refuse a date job whose only tick, at `run_date`, ran already under this id."""
        if await in_thread(lambda: self._runs.tick_recorded(job_id, run_date)):
            raise JobAlreadyRanError(
                f"job {job_id!r} already ran its only tick, at {run_date.isoformat()}; "
                "give a new run another id or another run_date"
            )

    async def _trigger(self, trigger: Trigger | Mapping[str, Any], now: datetime) -> Trigger:
        """Validate and pin a trigger, off the event loop: finding that a cron trigger never
        fires (February 31st) steps through the years, about 0.15 s of CPU."""
        requested = validated_trigger(trigger)
        zone = self.settings.timezone
        return await in_thread(lambda: normalize_trigger(requested, default_zone=zone, now=now))

    async def get_job(self, job_id: str) -> JobInfo:
        """Return a scheduled job by id.

        Raises:
            JobNotFoundError: No job has that id.
        """
        self._require_running()
        return read_row(JobInfo, await in_thread(lambda: self._jobs.get(job_id)))

    async def list_jobs(
        self, *, function: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobInfo]:
        """Return scheduled jobs ordered by id."""
        self._require_running()
        check_page(limit, offset)
        rows = await in_thread(
            lambda: self._jobs.list_jobs(function=function, limit=limit, offset=offset)
        )
        return [read_row(JobInfo, r) for r in rows]

    async def remove_job(self, job_id: str) -> None:
        """Delete a scheduled job; its run history stays.

        Raises:
            JobNotFoundError: No job has that id.
        """
        self._require_running()
        await in_thread(lambda: self._jobs.delete(job_id))
        self._emit(EventType.JOB_REMOVED, job_id=job_id)

    async def pause_job(self, job_id: str) -> JobInfo:
        """Stop a job's ticks until it is resumed."""
        return await self._set_paused(job_id, paused=True)

    async def resume_job(self, job_id: str) -> JobInfo:
        """Resume a paused job from its next tick after now."""
        return await self._set_paused(job_id, paused=False)

    async def _set_paused(self, job_id: str, *, paused: bool) -> JobInfo:
        dispatcher = self._require_running()
        row = await in_thread(lambda: self._jobs.set_paused(job_id, paused=paused, now=utcnow()))
        dispatcher.wake()
        self._emit(
            EventType.JOB_PAUSED if paused else EventType.JOB_RESUMED,
            job_id=job_id,
            function=row["function"],
        )
        return read_row(JobInfo, row)

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
        function: str | None = None,
        trigger: Trigger | Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
        misfire_grace_time: float | None = None,
        coalesce: bool | None = None,
        max_instances: int | None = None,
    ) -> JobInfo:
        """Change what is given of a job; a new trigger restarts its schedule from now.

        Raises:
            JobNotFoundError: No job has that id.
            FunctionNotFoundError: No job function has the new name.
            InvalidArgumentsError: The arguments or limits are invalid.
            InvalidTriggerError: The trigger is invalid.
        """
        dispatcher = self._require_running()
        now = utcnow()
        spec = None if trigger is None else await self._trigger(trigger, now)
        if misfire_grace_time is not None and misfire_grace_time < 0:
            raise InvalidArgumentsError("misfire_grace_time must be ≥ 0")
        if max_instances is not None and max_instances < 1:
            raise InvalidArgumentsError("max_instances must be ≥ 1")
        if function is not None:
            await self._look_up_elsewhere("job", function)
            self._registry.require_known("job", function)
        values: dict[str, Any] = {
            key: value
            for key, value in (
                ("function", function),
                ("misfire_grace_time", misfire_grace_time),
                ("coalesce", coalesce),
                ("max_instances", max_instances),
            )
            if value is not None
        }

        def modify() -> dict[str, Any]:
            if arguments is not None:
                name = function or self._jobs.get(job_id)["function"]
                values["arguments"] = self._arguments("job", name, arguments)
            return self._jobs.modify(job_id, trigger=spec, values=values, now=now)

        row = await in_thread(modify)
        dispatcher.wake()
        self._emit(EventType.JOB_MODIFIED, job_id=job_id, function=row["function"])
        return read_row(JobInfo, row)

    async def run_job_now(self, job_id: str) -> JobRunInfo:
        """Queue one extra run of a job right away; its schedule is unchanged.

        Raises:
            JobNotFoundError: No job has that id.
        """
        dispatcher = self._require_running()
        run = await in_thread(lambda: self._runs.queue_run(job_id, now=utcnow()))
        dispatcher.wake()
        return read_row(JobRunInfo, run)

    async def list_job_runs(
        self,
        *,
        job_id: str | None = None,
        state: JobRunState | Sequence[JobRunState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRunInfo]:
        """Return runs of scheduled jobs, latest tick first; `since`/`until` bound the tick."""
        self._require_running()
        check_page(limit, offset)
        states = () if state is None else (state,) if isinstance(state, JobRunState) else state
        rows = await in_thread(
            lambda: self._history.list_runs(
                job_id=job_id,
                states=tuple(JobRunState(s) for s in states),
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )
        return [read_row(JobRunInfo, r) for r in rows]

    async def get_job_run(self, run_id: str) -> JobRunInfo:
        """Return one run of a scheduled job.

        Raises:
            JobNotFoundError: No run has that id.
        """
        self._require_running()
        row = await in_thread(lambda: self._runs.get_run(run_id))
        if row is None:
            raise JobNotFoundError(f"no job run has id {run_id!r}")
        return read_row(JobRunInfo, row)
