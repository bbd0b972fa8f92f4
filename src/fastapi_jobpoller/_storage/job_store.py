"""Queries on the jobs and job-runs tables: define jobs, claim ticks, record runs.

A tick becomes a run row inside the transaction that moves the job's `next_run_at`
forward, while that job row is locked (`FOR UPDATE SKIP LOCKED`, or SQLite's write
lock), and `(job_id, scheduled_at)` is unique: a tick runs once however many processes
share the database.
"""

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from .._apscheduler import first_fire_time
from .._rules.job_rules import gives_up_lost_run, plan_tick
from ..exceptions import JobConflictError, JobNotFoundError
from ..models import JobRunState
from ..triggers import TRIGGER_ADAPTER, Trigger
from .database import Database

__all__ = ["JobStore"]


class JobStore:
    """The jobs and job-runs tables' queries."""

    def __init__(self, database: Database, *, default_zone: str) -> None:
        self._db = database
        self._jobs = database.tables.jobs
        self._runs = database.tables.job_runs
        self._zone = default_zone

    # -- job definitions -------------------------------------------------------------

    def insert(self, row: Mapping[str, Any], *, replace_existing: bool) -> dict[str, Any]:
        """Store a new job, or replace the one with that id if asked to.

        Raises:
            JobConflictError: The id is taken and `replace_existing` is false.
        """
        jobs = self._jobs
        with self._db.transaction() as connection:
            exists = connection.execute(
                sa.select(jobs.c.id).where(jobs.c.id == row["id"]).with_for_update()
            ).first()
            if exists is not None and not replace_existing:
                raise JobConflictError(f"a job with id {row['id']!r} exists already")
            try:
                if exists is None:
                    connection.execute(sa.insert(jobs).values(**row))
                else:
                    values = {k: v for k, v in row.items() if k not in ("id", "created_at")}
                    connection.execute(
                        sa.update(jobs).where(jobs.c.id == row["id"]).values(**values)
                    )
            except exc.IntegrityError:
                raise JobConflictError(f"a job with id {row['id']!r} exists already") from None
            self._db.announce_change(connection)
            return self._get(connection, row["id"])

    def _get(self, connection: Connection, job_id: str) -> dict[str, Any]:
        row = connection.execute(sa.select(self._jobs).where(self._jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        return dict(row._mapping)

    def get(self, job_id: str) -> dict[str, Any]:
        """Return one job's row.

        Raises:
            JobNotFoundError: No job has that id.
        """
        with self._db.transaction(read_only=True) as connection:
            return self._get(connection, job_id)

    def list_jobs(self, *, function: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        """Return jobs ordered by id."""
        query = sa.select(self._jobs).order_by(self._jobs.c.id)
        if function is not None:
            query = query.where(self._jobs.c.function == function)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(r._mapping) for r in rows]

    def delete(self, job_id: str) -> None:
        """Remove a job (its past runs stay in the history).

        Raises:
            JobNotFoundError: No job has that id.
        """
        with self._db.transaction() as connection:
            deleted = connection.execute(sa.delete(self._jobs).where(self._jobs.c.id == job_id))
            if deleted.rowcount == 0:
                raise JobNotFoundError(f"no job has id {job_id!r}")

    def set_paused(self, job_id: str, *, paused: bool, now: datetime) -> dict[str, Any]:
        """Pause a job (no more ticks) or resume it from the next tick after now.

        Raises:
            JobNotFoundError: No job has that id.
        """
        jobs = self._jobs
        with self._db.transaction() as connection:
            row = connection.execute(
                sa.select(jobs).where(jobs.c.id == job_id).with_for_update()
            ).first()
            if row is None:
                raise JobNotFoundError(f"no job has id {job_id!r}")
            if bool(row.paused) != paused:
                if paused:
                    next_run_at = None
                else:
                    trigger = TRIGGER_ADAPTER.validate_python(row.trigger)
                    next_run_at = first_fire_time(trigger, default_zone=self._zone, now=now)
                connection.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(paused=paused, next_run_at=next_run_at, updated_at=now)
                )
                self._db.announce_change(connection)
            return self._get(connection, job_id)

    def modify(
        self,
        job_id: str,
        *,
        trigger: Trigger | None,
        values: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """Update a job's columns; a new trigger also sets its next tick (unless paused).

        Raises:
            JobNotFoundError: No job has that id.
        """
        jobs = self._jobs
        with self._db.transaction() as connection:
            row = connection.execute(
                sa.select(jobs.c.paused).where(jobs.c.id == job_id).with_for_update()
            ).first()
            if row is None:
                raise JobNotFoundError(f"no job has id {job_id!r}")
            changes = {**values, "updated_at": now}
            if trigger is not None:
                changes["trigger"] = trigger.model_dump(mode="json")
                changes["next_run_at"] = (
                    None
                    if row.paused
                    else first_fire_time(trigger, default_zone=self._zone, now=now)
                )
            connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**changes))
            self._db.announce_change(connection)
            return self._get(connection, job_id)

    # -- runs ------------------------------------------------------------------------

    def queue_run(self, job_id: str, *, now: datetime) -> dict[str, Any]:
        """Queue an extra run of a job now, outside its schedule.

        Raises:
            JobNotFoundError: No job has that id.
        """
        with self._db.transaction() as connection:
            job = self._get(connection, job_id)
            run = _new_run(job, scheduled_at=now, state=JobRunState.QUEUED, attempt=0)
            run["due_at"] = now
            connection.execute(sa.insert(self._runs).values(**run))
            self._db.announce_change(connection)
        return run

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """Return one run's row, or None."""
        with self._db.transaction(read_only=True) as connection:
            row = connection.execute(sa.select(self._runs).where(self._runs.c.id == run_id)).first()
        return None if row is None else dict(row._mapping)

    def list_runs(self, *, job_id: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        """Return runs, latest tick first."""
        runs = self._runs
        query = sa.select(runs).order_by(runs.c.scheduled_at.desc(), runs.c.id)
        if job_id is not None:
            query = query.where(runs.c.job_id == job_id)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(r._mapping) for r in rows]

    def claim_ticks(
        self, *, worker: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """Turn due ticks into run rows, leased to `worker`; return them all.

        What each tick becomes is `plan_tick`'s decision (`_rules/job_rules.py`): run,
        missed or skipped; only runs in state running are to be executed.
        """
        jobs, runs = self._jobs, self._runs
        due = (
            sa.select(jobs)
            .where(jobs.c.next_run_at <= now, jobs.c.paused.is_(False))
            .order_by(jobs.c.next_run_at)
            .limit(limit)
        )
        if self._db.skip_locked:
            due = due.with_for_update(skip_locked=True)
        created: list[dict[str, Any]] = []
        with self._db.transaction() as connection:
            for row in connection.execute(due).all():
                job = dict(row._mapping)
                plan = plan_tick(
                    TRIGGER_ADAPTER.validate_python(job["trigger"]),
                    due=job["next_run_at"],
                    now=now,
                    default_zone=self._zone,
                    coalesce=job["coalesce"],
                    misfire_grace_time=job["misfire_grace_time"],
                    max_instances=job["max_instances"],
                    running=functools.partial(self._running, connection, job["id"], now),
                )
                run = _new_run(job, scheduled_at=plan.scheduled_at, state=plan.state, attempt=1)
                if plan.state is JobRunState.RUNNING:
                    run.update(worker=worker, due_at=lease_until, started_at=now)
                else:
                    run.update(worker=worker, finished_at=now, error=plan.error)
                created.append(run)
                connection.execute(sa.insert(runs).values(**run))
                if plan.removes_job:
                    connection.execute(sa.delete(jobs).where(jobs.c.id == job["id"]))
                else:
                    connection.execute(
                        sa.update(jobs)
                        .where(jobs.c.id == job["id"])
                        .values(next_run_at=plan.next_run_at, updated_at=now)
                    )
        return created

    def _running(self, connection: Connection, job_id: str, now: datetime) -> int:
        runs = self._runs
        count = connection.execute(
            sa.select(sa.func.count())
            .select_from(runs)
            .where(
                runs.c.job_id == job_id,
                runs.c.state == JobRunState.RUNNING.value,
                runs.c.due_at > now,
            )
        ).scalar_one()
        return int(count)

    def claim_runs(
        self, *, worker: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """Lease queued runs (run now) and runs whose worker's lease expired.

        A run whose workers were lost too often is marked failed instead, and returned
        too (in state failed), so that it is reported.
        """
        runs = self._runs
        due = sa.select(runs).where(runs.c.due_at <= now).order_by(runs.c.due_at).limit(limit)
        if self._db.skip_locked:
            due = due.with_for_update(skip_locked=True)
        claimed: list[dict[str, Any]] = []
        with self._db.transaction() as connection:
            for row in connection.execute(due).all():
                run = dict(row._mapping)
                if gives_up_lost_run(run["attempt"]):
                    given_up = {
                        "state": JobRunState.FAILED.value,
                        "due_at": None,
                        "finished_at": now,
                        "error": f"worker lost {run['attempt']} times; not run again",
                    }
                    connection.execute(
                        sa.update(runs).where(runs.c.id == run["id"]).values(**given_up)
                    )
                    run.update(given_up)
                    claimed.append(run)
                    continue
                lease = {
                    "state": JobRunState.RUNNING.value,
                    "worker": worker,
                    "due_at": lease_until,
                    "started_at": now,
                    "attempt": run["attempt"] + 1,
                }
                connection.execute(sa.update(runs).where(runs.c.id == run["id"]).values(**lease))
                run.update(lease)
                claimed.append(run)
        return claimed

    def finish_run(
        self,
        run: Mapping[str, Any],
        *,
        worker: str,
        state: JobRunState,
        result: Any,
        error: str | None,
        now: datetime,
        traceback: str | None = None,
    ) -> bool:
        """Record how a run this worker holds ended; drop a job with no ticks left.

        Returns:
            Whether the write landed (False: the lease was lost meanwhile).
        """
        jobs, runs = self._jobs, self._runs
        with self._db.transaction() as connection:
            written = connection.execute(
                sa.update(runs)
                .where(
                    runs.c.id == run["id"],
                    runs.c.worker == worker,
                    runs.c.attempt == run["attempt"],
                    runs.c.state == JobRunState.RUNNING.value,
                )
                .values(
                    state=state.value,
                    result=result,
                    error=error,
                    traceback=traceback,
                    finished_at=now,
                    due_at=None,
                )
            )
            connection.execute(
                sa.delete(jobs).where(
                    jobs.c.id == run["job_id"],
                    jobs.c.next_run_at.is_(None),
                    jobs.c.paused.is_(False),
                )
            )
        return bool(written.rowcount)

    def renew_leases(self, run_ids: Sequence[str], *, worker: str, lease_until: datetime) -> int:
        """Extend this worker's leases on the runs it is executing."""
        return self._set_leases(runs_ids_filter(self._runs, run_ids), worker, lease_until)

    def release_leases(self, *, worker: str, now: datetime) -> int:
        """Hand this worker's unfinished runs back at once (used at shutdown)."""
        return self._set_leases(sa.true(), worker, now)

    def _set_leases(self, condition: Any, worker: str, lease_until: datetime) -> int:
        runs = self._runs
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(runs)
                .where(
                    condition,
                    runs.c.worker == worker,
                    runs.c.state == JobRunState.RUNNING.value,
                )
                .values(due_at=lease_until)
            )
        return int(result.rowcount)

    def next_due(self) -> datetime | None:
        """Return the earliest tick or run due, or None if nothing is scheduled."""
        jobs, runs = self._jobs, self._runs
        with self._db.transaction(read_only=True) as connection:
            tick = connection.execute(
                sa.select(sa.func.min(jobs.c.next_run_at)).where(jobs.c.paused.is_(False))
            ).scalar()
            run = connection.execute(sa.select(sa.func.min(runs.c.due_at))).scalar()
        values = [v if v.tzinfo else v.replace(tzinfo=UTC) for v in (tick, run) if v is not None]
        return min(values) if values else None


def runs_ids_filter(runs: sa.Table, run_ids: Sequence[str]) -> Any:
    """Return `id IN (...)` for the given run ids (false for none)."""
    return runs.c.id.in_(list(run_ids)) if run_ids else sa.false()


def _new_run(
    job: Mapping[str, Any], *, scheduled_at: datetime, state: JobRunState, attempt: int
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "job_id": job["id"],
        "function": job["function"],
        "arguments": job["arguments"],
        "scheduled_at": scheduled_at,
        "state": state.value,
        "attempt": attempt,
        "due_at": None,
        "worker": None,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
        "traceback": None,
    }
