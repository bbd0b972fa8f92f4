"""List the jobs an APScheduler job store holds, with the trigger to declare each one here.

fastapi-jobpoller never reads APScheduler's `apscheduler_jobs` table: its jobs are rows
of pickled Python objects, ours are JSON rows of our own tables. Moving is done once, by
hand, with this inventory:

    python examples/migrate_from_apscheduler.py sqlite:///./scheduler.db

For each stored job it prints the id, the function, the arguments, the next run and the
`declare_job` call that fires at the same times. Then declare the recurring jobs in your
code, restart the per-request ones as polls, and drop the old table
(docs/migration.md goes through it step by step).

Reading a row unpickles it, as APScheduler does, so run this on your own table only.
Unlike APScheduler's job store, it never imports your job functions and never deletes a
row it cannot read.
"""

import pickle
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger as APSchedulerCronTrigger
from apscheduler.triggers.date import DateTrigger as APSchedulerDateTrigger
from apscheduler.triggers.interval import IntervalTrigger as APSchedulerIntervalTrigger

from fastapi_jobpoller import CronTrigger, DateTrigger, IntervalTrigger


@dataclass(frozen=True)
class StoredJob:
    """One row of an APScheduler 3 `SQLAlchemyJobStore` table, unpickled."""

    id: str
    function: str  # the "module:name" reference APScheduler stores
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    trigger: Any  # APScheduler's own trigger object
    next_run_time: datetime | None  # None while the job is paused
    misfire_grace_time: float | None
    coalesce: bool
    max_instances: int

    @property
    def function_name(self) -> str:
        """The function's own name: what `@poller.job_function()` registers by default."""
        return self.function.rpartition(":")[2].rpartition(".")[2]


def read_apscheduler_jobs(
    database_url: str, table_name: str = "apscheduler_jobs"
) -> list[StoredJob]:
    """Return the jobs stored in an APScheduler 3 SQLAlchemy job store table, by id."""
    engine = sa.create_engine(database_url)
    try:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(table.c.id, table.c.job_state).order_by(table.c.id)
            ).all()
    finally:
        engine.dispose()
    jobs = []
    for job_id, job_state in rows:
        # The job store pickles `Job.__getstate__()`: a dict whose function is a text
        # reference, so unpickling it imports APScheduler's trigger classes only.
        state = pickle.loads(job_state)
        jobs.append(
            StoredJob(
                id=job_id,
                function=state["func"],
                args=tuple(state["args"]),
                kwargs=dict(state["kwargs"]),
                trigger=state["trigger"],
                next_run_time=state["next_run_time"],
                misfire_grace_time=state["misfire_grace_time"],
                coalesce=state["coalesce"],
                max_instances=state["max_instances"],
            )
        )
    return jobs


def _zone_name(zone: Any) -> str | None:
    if zone is None:
        return None
    # zoneinfo zones have a key, pytz zones a zone; datetime.timezone.utc prints as UTC.
    return str(getattr(zone, "key", None) or getattr(zone, "zone", None) or zone)


def translate_trigger(trigger: Any) -> IntervalTrigger | CronTrigger | DateTrigger:
    """Return our trigger that fires when the APScheduler trigger does.

    Raises:
        ValueError: The trigger has no counterpart here (a combining or calendar
            interval trigger, say): declare that job by hand.
    """
    if isinstance(trigger, APSchedulerCronTrigger):
        fields = {field.name: str(field) for field in trigger.fields if not field.is_default}
        return CronTrigger(
            **fields,
            start_date=trigger.start_date,
            end_date=trigger.end_date,
            timezone=_zone_name(trigger.timezone),
            jitter=trigger.jitter,
        )
    if isinstance(trigger, APSchedulerIntervalTrigger):
        # The stored start keeps the ticks where they were (every 30 s from 12:00:07).
        return IntervalTrigger(
            seconds=trigger.interval.total_seconds(),
            start_date=trigger.start_date,
            end_date=trigger.end_date,
            timezone=_zone_name(trigger.timezone),
            jitter=trigger.jitter,
        )
    if isinstance(trigger, APSchedulerDateTrigger):
        return DateTrigger(run_date=trigger.run_date)
    raise ValueError(f"{type(trigger).__name__} has no counterpart: declare this job by hand")


def declaration(job: StoredJob) -> str:
    """Return the `declare_job` call for a stored job, as Python source."""
    try:
        trigger = translate_trigger(job.trigger)
    except ValueError as error:
        return f"# {job.id}: {error}"
    fields = trigger.model_dump(exclude_defaults=True, exclude={"type"})
    trigger_source = (
        f"{type(trigger).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
    )
    call = f"poller.declare_job({job.id!r}, {job.function_name!r}, {trigger_source}"
    if job.kwargs:
        call += f", arguments={job.kwargs!r}"
    call += ")"
    if job.args:
        # Our functions take named JSON arguments: give these their parameter names.
        call += f"  # and positional arguments {list(job.args)!r}"
    return call


def main(arguments: list[str]) -> int:
    if not 1 <= len(arguments) <= 2:
        print("usage: migrate_from_apscheduler.py DATABASE_URL [TABLE_NAME]", file=sys.stderr)
        return 2
    jobs = read_apscheduler_jobs(*arguments)
    for job in jobs:
        when = job.next_run_time.isoformat() if job.next_run_time else "paused"
        print(f"{job.id}: {job.function} args={list(job.args)} kwargs={job.kwargs}, next {when}")
        print(f"    {declaration(job)}")
    print(f"{len(jobs)} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
