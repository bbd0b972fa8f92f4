"""Stored polls for both designs, written in bulk before an app starts, and cleanup.

Poll `i` of `n` is first due at `first_due + i / n * interval`, so the due attempts are
spread evenly over each interval. Rows are written with multi-row INSERTs: seeding is
not what is measured, and 100,000 single inserts would take minutes.
"""

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from fastapi_jobpoller import JobPoller, PollOptions
from fastapi_jobpoller._storage.database import Database

__all__ = [
    "APS_FUNCTION",
    "APS_JOB_DEFAULTS",
    "POLL_FUNCTION",
    "aps_table",
    "drop_all",
    "poll_id",
    "seed_apscheduler",
    "seed_jobpoller",
]

POLL_FUNCTION = "jobpoller_poll"
APS_FUNCTION = "bench_workload:aps_job"
# The guide's job defaults (its "database persistence" example): coalesce, one instance,
# and a 300 s grace time, so late runs still run instead of being recorded as missed.
APS_JOB_DEFAULTS: dict[str, Any] = {
    "coalesce": True,
    "max_instances": 1,
    "misfire_grace_time": 300,
}
_CHUNK = 5000


def poll_id(index: int) -> str:
    """Return the stored id of poll `index` (the same for both designs)."""
    return f"bench-{index:06d}"


def aps_table(prefix: str) -> str:
    """Return the baseline's job table name for a table prefix."""
    return f"{prefix}aps_jobs"


def _due(first_due: datetime, index: int, count: int, interval: float) -> datetime:
    return first_due + timedelta(seconds=interval * index / count)


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def seed_jobpoller(
    url: str,
    prefix: str,
    count: int,
    *,
    first_due: datetime,
    interval: float = 1.0,
    function: str = POLL_FUNCTION,
) -> None:
    """Create our tables and store `count` pending polls of `function`."""
    database = Database(url, table_prefix=prefix)
    try:
        database.create_schema()
        # The library's own row builder, so the rows are exactly what start_poll writes.
        builder = JobPoller(database_url=url, table_prefix=prefix)
        options = PollOptions(interval=interval)
        now = datetime.now(UTC)
        rows = []
        for index in range(count):
            row = builder._new_poll_row(function, {"i": index}, poll_id(index), options, now)
            row["next_poll_at"] = _due(first_due, index, count, interval)
            rows.append(row)
        with database.transaction() as connection:
            for chunk in _chunks(rows):
                connection.execute(sa.insert(database.tables.polls), chunk)
    finally:
        database.dispose()


def seed_apscheduler(
    url: str,
    prefix: str,
    count: int,
    *,
    first_due: datetime,
    interval: float = 1.0,
) -> None:
    """Create the baseline's job table and store `count` interval jobs.

    The rows are what `SQLAlchemyJobStore.add_job` writes for
    `add_job(aps_job, "interval", seconds=interval, args=[i], id=..., **APS_JOB_DEFAULTS)`
    with the trigger starting at the job's first due time.
    """
    store = SQLAlchemyJobStore(url=url, tablename=aps_table(prefix))
    try:
        store.jobs_t.create(store.engine, checkfirst=True)
        scheduler = BackgroundScheduler(timezone=UTC)
        template = IntervalTrigger(seconds=interval, start_date=first_due, timezone=UTC)
        from apscheduler.job import Job

        job = Job(
            scheduler,
            id=poll_id(0),
            func=APS_FUNCTION,
            trigger=template,
            executor="default",
            args=(0,),
            kwargs={},
            name="aps_job",
            next_run_time=first_due,
            **APS_JOB_DEFAULTS,
        )
        rows = []
        for index in range(count):
            due = _due(first_due, index, count, interval)
            job.id = poll_id(index)
            job.args = (index,)
            job.trigger = IntervalTrigger(seconds=interval, start_date=due, timezone=UTC)
            job.next_run_time = due
            rows.append(
                {
                    "id": job.id,
                    "next_run_time": due.timestamp(),
                    "job_state": pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL),
                }
            )
        with store.engine.begin() as connection:
            for chunk in _chunks(rows):
                connection.execute(store.jobs_t.insert(), chunk)
    finally:
        store.engine.dispose()


def drop_all(url: str, prefix: str) -> None:
    """Drop both designs' tables for this prefix."""
    database = Database(url, table_prefix=prefix)
    try:
        with database.transaction() as connection:
            database.tables.metadata.drop_all(connection, checkfirst=True)
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{aps_table(prefix)}"'))
    finally:
        database.dispose()
