"""Queries on the job-runs table: turn due ticks into runs, lease, finish and renew them.

A tick becomes a run row inside the transaction that moves the job's `next_run_at`
forward, while that job row is locked (`FOR UPDATE SKIP LOCKED`, or SQLite's write
lock), and `(job_id, scheduled_at)` is unique: a tick runs once however many processes
share the database. A process claims only ticks and runs of functions it registers.
"""

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from .._rules.job_rules import gives_up_lost_run, job_is_spent, plan_tick
from .._rules.row_checks import describe_error
from ..exceptions import DatabaseUnavailableError, JobNotFoundError
from ..models import JobRunState
from ..triggers import TRIGGER_ADAPTER
from .database import Database, retry_lock_conflicts
from .quarantine_store import is_quarantined, record_quarantine

__all__ = ["RunStore", "TickClaim"]

# What the database may raise mid-claim: never a reason to set a job aside.
DATABASE_FAILURES = (exc.SQLAlchemyError, DatabaseUnavailableError)


@dataclass(slots=True)
class TickClaim:
    """What a claim of due ticks made."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    """New run rows; those in state running are leased to the claimer, to execute."""
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    """Job rows set aside by this claim (each with a `reason`), to report."""


@retry_lock_conflicts
class RunStore:
    """The job-runs table's queries, and the tick claims that write it."""

    def __init__(self, database: Database, *, default_zone: str) -> None:
        self._db = database
        self._jobs = database.tables.jobs
        self._runs = database.tables.job_runs
        self._quarantine = database.tables.quarantine
        self._zone = default_zone

    # -- runs ------------------------------------------------------------------------

    def queue_run(self, job_id: str, *, now: datetime) -> dict[str, Any]:
        """Queue an extra run of a job now, outside its schedule.

        Raises:
            JobNotFoundError: No job has that id.
        """
        jobs = self._jobs
        with self._db.transaction() as connection:
            row = connection.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise JobNotFoundError(f"no job has id {job_id!r}")
            run = _new_run(
                dict(row._mapping), scheduled_at=now, state=JobRunState.QUEUED, attempt=0
            )
            run["due_at"] = now
            connection.execute(sa.insert(self._runs).values(**run))
            self._db.announce_change(connection)
        return run

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """Return one run's row, or None."""
        with self._db.transaction(read_only=True) as connection:
            row = connection.execute(sa.select(self._runs).where(self._runs.c.id == run_id)).first()
        return None if row is None else dict(row._mapping)

    def claim_ticks(
        self,
        *,
        worker: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        functions: Sequence[str],
    ) -> TickClaim:
        """Turn due ticks of jobs whose function is in `functions` into run rows.

        What each tick becomes is `plan_tick`'s decision (`_rules/job_rules.py`): run,
        missed or skipped; only runs in state running are to be executed. A tick already
        recorded is not recorded again: the job moves on to its following tick. A job the
        engine cannot plan (its stored trigger does not validate, its zone is unknown
        here) is set aside in the quarantine table, untouched, and reported once.
        """
        jobs = self._jobs
        due = (
            sa.select(jobs)
            .where(
                jobs.c.next_run_at <= now,
                jobs.c.paused.is_(False),
                jobs.c.function.in_(list(functions)),
                ~is_quarantined(self._quarantine, "job", jobs.c.id),
            )
            .order_by(jobs.c.next_run_at)
            .limit(limit)
        )
        if self._db.skip_locked:
            due = due.with_for_update(skip_locked=True)
        claim = TickClaim([], [])
        with self._db.transaction() as connection:
            for row in connection.execute(due).all():
                self._claim_tick(connection, dict(row._mapping), claim, worker, now, lease_until)
        return claim

    def _claim_tick(
        self,
        connection: Connection,
        job: dict[str, Any],
        claim: "TickClaim",
        worker: str,
        now: datetime,
        lease_until: datetime,
    ) -> None:
        try:
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
        except DATABASE_FAILURES:
            raise
        except Exception as error:  # the stored row, not the database: set it aside
            reason = f"its trigger cannot be used: {describe_error(error)}"
            record_quarantine(
                connection,
                self._quarantine,
                kind="job",
                row_id=job["id"],
                reason=reason,
                worker=worker,
                now=now,
            )
            claim.quarantined.append({**job, "reason": reason})
            return
        if not self._tick_recorded(connection, job["id"], plan.scheduled_at):
            run = _new_run(job, scheduled_at=plan.scheduled_at, state=plan.state, attempt=1)
            if plan.state is JobRunState.RUNNING:
                run.update(worker=worker, due_at=lease_until, started_at=now)
            else:
                run.update(worker=worker, finished_at=now, error=plan.error)
            claim.runs.append(run)
            connection.execute(sa.insert(self._runs).values(**run))
        jobs = self._jobs
        running = 0 if plan.next_run_at else self._running(connection, job["id"], now)
        if job_is_spent(plan.next_run_at, running):
            connection.execute(sa.delete(jobs).where(jobs.c.id == job["id"]))
        else:
            connection.execute(
                sa.update(jobs)
                .where(jobs.c.id == job["id"])
                .values(next_run_at=plan.next_run_at, updated_at=now)
            )

    def _tick_recorded(self, connection: Connection, job_id: str, scheduled_at: datetime) -> bool:
        runs = self._runs
        found = connection.execute(
            sa.select(runs.c.id).where(runs.c.job_id == job_id, runs.c.scheduled_at == scheduled_at)
        ).first()
        return found is not None

    def tick_recorded(self, job_id: str, scheduled_at: datetime) -> bool:
        """Return whether a run of the job's tick at `scheduled_at` exists already."""
        with self._db.transaction(read_only=True) as connection:
            return self._tick_recorded(connection, job_id, scheduled_at)

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
        self,
        *,
        worker: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        functions: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Lease queued runs (run now) and runs whose worker's lease expired.

        A run whose workers were lost too often is marked failed instead, and returned
        too (in state failed), so that it is reported.
        """
        runs = self._runs
        due = (
            sa.select(runs)
            .where(runs.c.due_at <= now, runs.c.function.in_(list(functions)))
            .order_by(runs.c.due_at)
            .limit(limit)
        )
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
                .where(*self._held(run, worker))
                .values(
                    state=state.value,
                    result=result,
                    error=error,
                    traceback=traceback,
                    finished_at=now,
                    due_at=None,
                )
            )
            if written.rowcount and job_is_spent(
                None, self._running(connection, run["job_id"], now)
            ):
                # Its last run ended: a job with no tick left goes (not paused, not set aside).
                connection.execute(
                    sa.delete(jobs).where(
                        jobs.c.id == run["job_id"],
                        jobs.c.next_run_at.is_(None),
                        jobs.c.paused.is_(False),
                        ~is_quarantined(self._quarantine, "job", jobs.c.id),
                    )
                )
        return bool(written.rowcount)

    def _held(self, run: Mapping[str, Any], worker: str) -> tuple[Any, ...]:
        """The fence of a run's write: still running, leased by `worker`, same attempt."""
        runs = self._runs
        return (
            runs.c.id == run["id"],
            runs.c.worker == worker,
            runs.c.attempt == run["attempt"],
            runs.c.state == JobRunState.RUNNING.value,
        )

    def put_back(self, run: Mapping[str, Any], *, worker: str, at: datetime) -> bool:
        """Queue again a run this worker holds but could not start; its attempt uncounted.

        Returns:
            Whether it landed (False: the lease was lost meanwhile).
        """
        runs = self._runs
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(runs)
                .where(*self._held(run, worker))
                .values(
                    state=JobRunState.QUEUED.value,
                    due_at=at,
                    worker=None,
                    started_at=None,
                    attempt=run["attempt"] - 1,
                )
            )
            self._db.announce_change(connection)
        return bool(result.rowcount)

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

    def next_due(self, functions: Sequence[str]) -> datetime | None:
        """Return the earliest tick or run due of the given functions, or None."""
        jobs, runs = self._jobs, self._runs
        if not functions:
            return None
        with self._db.transaction(read_only=True) as connection:
            tick = connection.execute(
                sa.select(sa.func.min(jobs.c.next_run_at)).where(
                    jobs.c.paused.is_(False),
                    jobs.c.function.in_(list(functions)),
                    ~is_quarantined(self._quarantine, "job", jobs.c.id),
                )
            ).scalar()
            run = connection.execute(
                sa.select(sa.func.min(runs.c.due_at)).where(runs.c.function.in_(list(functions)))
            ).scalar()
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
