"""Queries on the jobs table: define, read, change, pause and delete scheduled jobs.

The engine's side of jobs, turning ticks into runs and recording them, is in
`run_store.py`.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from .._apscheduler import first_fire_time
from .._rules.row_checks import describe_error
from ..exceptions import InvalidTriggerError, JobConflictError, JobNotFoundError
from ..triggers import TRIGGER_ADAPTER, Trigger
from .database import Database, retry_lock_conflicts
from .quarantine_store import forget_quarantine, is_quarantined

__all__ = ["JobStore"]


@retry_lock_conflicts
class JobStore:
    """The jobs and job-runs tables' queries."""

    def __init__(self, database: Database, *, default_zone: str) -> None:
        self._db = database
        self._jobs = database.tables.jobs
        self._quarantine = database.tables.quarantine
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
            self._release_quarantine(connection, row["id"])  # defined anew: nothing set aside
            self._db.announce_change(connection)
            return self._get(connection, row["id"])

    def _select(self) -> sa.Select[Any]:
        """Select jobs with the reason of a quarantine record, if any, as `problem`."""
        jobs, quarantine = self._jobs, self._quarantine
        return sa.select(jobs, quarantine.c.reason.label("problem")).outerjoin(
            quarantine, sa.and_(quarantine.c.kind == "job", quarantine.c.row_id == jobs.c.id)
        )

    def _get(self, connection: Connection, job_id: str) -> dict[str, Any]:
        row = connection.execute(self._select().where(self._jobs.c.id == job_id)).first()
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
        query = self._select().order_by(self._jobs.c.id)
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
            self._release_quarantine(connection, job_id)

    def set_paused(self, job_id: str, *, paused: bool, now: datetime) -> dict[str, Any]:
        """Pause a job (no more ticks) or resume it from the next tick after now.

        Raises:
            JobNotFoundError: No job has that id.
            InvalidTriggerError: Resuming a job whose stored trigger cannot be used.
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
                    next_run_at = self._first_tick(row.trigger, now)
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
            if trigger is not None or "arguments" in values:
                # Given anew through the API: whatever set the job aside is replaced.
                self._release_quarantine(connection, job_id)
            self._db.announce_change(connection)
            return self._get(connection, job_id)

    def _first_tick(self, stored_trigger: Any, now: datetime) -> datetime | None:
        try:
            trigger = TRIGGER_ADAPTER.validate_python(stored_trigger)
        except ValidationError as error:
            raise InvalidTriggerError(
                f"the stored trigger cannot be used ({describe_error(error)}); "
                "give the job a new one"
            ) from None
        return first_fire_time(trigger, default_zone=self._zone, now=now)

    def _release_quarantine(self, connection: Connection, job_id: str) -> None:
        forget_quarantine(connection, self._quarantine, kind="job", row_id=job_id)

    def overdue(self, *, before: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Return jobs whose next tick was due before `before`, not paused nor set aside."""
        jobs = self._jobs
        query = (
            sa.select(jobs)
            .where(
                jobs.c.next_run_at < before,
                jobs.c.paused.is_(False),
                ~is_quarantined(self._quarantine, "job", jobs.c.id),
            )
            .order_by(jobs.c.next_run_at)
            .limit(limit)
        )
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query).all()
        return [dict(row._mapping) for row in rows]
