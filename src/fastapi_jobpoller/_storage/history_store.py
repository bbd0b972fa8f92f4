"""Run history: reading job runs and poll attempts, and pruning what is too old.

Pruning deletes in small batches (so no statement holds locks for long) and is safe to
run from every process at once: a row two processes both delete is deleted once.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..exceptions import InvalidArgumentsError
from ..models import JobRunState, PollState
from .database import Database, retry_lock_conflicts

__all__ = ["HistoryStore", "PruneReport", "Retention"]

# Rows deleted per statement while pruning.
_PRUNE_BATCH = 1000
_TERMINAL = [s.value for s in PollState if s.is_terminal]


def _check_aware(**bounds: datetime | None) -> None:
    """Refuse a naive time (whose wall clock would it be?), and one that has no UTC time
    (the first or last hours of the calendar, with a zone that pushes them past it)."""
    for name, value in bounds.items():
        if value is None:
            continue
        if value.tzinfo is None:
            raise InvalidArgumentsError(f"{name} needs a time zone (a naive time is ambiguous)")
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise InvalidArgumentsError(f"{name} is out of range once in UTC") from None


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history to keep; `None` keeps everything on that axis."""

    max_age_seconds: float | None
    max_runs_per_job: int | None
    max_attempts_per_poll: int | None
    finished_poll_max_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class PruneReport:
    """How many rows one pruning pass deleted."""

    job_runs: int
    poll_attempts: int
    polls: int


@retry_lock_conflicts
class HistoryStore:
    """Queries on job runs and poll attempts, and their retention."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._runs = database.tables.job_runs
        self._attempts = database.tables.poll_attempts
        self._polls = database.tables.polls

    def list_runs(
        self,
        *,
        job_id: str | None,
        states: Sequence[JobRunState],
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        """Return job runs, latest tick first, filtered by job, state and tick time."""
        _check_aware(since=since, until=until)
        runs = self._runs
        query = sa.select(runs).order_by(runs.c.scheduled_at.desc(), runs.c.id)
        if job_id is not None:
            query = query.where(runs.c.job_id == job_id)
        if states:
            query = query.where(runs.c.state.in_([s.value for s in states]))
        if since is not None:
            query = query.where(runs.c.scheduled_at >= since)
        if until is not None:
            query = query.where(runs.c.scheduled_at < until)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(r._mapping) for r in rows]

    def list_attempts(
        self,
        *,
        poll_id: str | None,
        outcomes: Sequence[str],
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        """Return recorded poll attempts, latest first."""
        _check_aware(since=since, until=until)
        attempts = self._attempts
        query = sa.select(attempts).order_by(
            attempts.c.finished_at.desc(), attempts.c.attempt.desc(), attempts.c.id
        )
        if poll_id is not None:
            query = query.where(attempts.c.poll_id == poll_id)
        if outcomes:
            query = query.where(attempts.c.outcome.in_(list(outcomes)))
        if since is not None:
            query = query.where(attempts.c.finished_at >= since)
        if until is not None:
            query = query.where(attempts.c.finished_at < until)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(r._mapping) for r in rows]

    def prune(self, retention: Retention, *, now: datetime) -> PruneReport:
        """Delete history past its age or count limits, and long-finished polls."""
        runs, attempts, polls = self._runs, self._attempts, self._polls
        deleted_runs = deleted_attempts = deleted_polls = 0
        if retention.max_age_seconds is not None:
            cutoff = now - timedelta(seconds=retention.max_age_seconds)
            deleted_runs += self._delete_where(
                runs, runs.c.finished_at < cutoff, runs.c.state != JobRunState.RUNNING.value
            )
            deleted_attempts += self._delete_where(attempts, attempts.c.finished_at < cutoff)
        if retention.finished_poll_max_age_seconds is not None:
            cutoff = now - timedelta(seconds=retention.finished_poll_max_age_seconds)
            deleted_polls += self._delete_where(
                polls,
                polls.c.state.in_(_TERMINAL),
                polls.c.callbacks_pending.is_(False),
                polls.c.finished_at < cutoff,
                # A deleted poll's recorded attempts go with it.
                cascade=attempts.c.poll_id,
            )
        if retention.max_runs_per_job is not None:
            deleted_runs += self._keep_newest(
                runs,
                runs.c.job_id,
                runs.c.scheduled_at,
                retention.max_runs_per_job,
                # Only ended runs: a queued run (run now) is work still to do.
                runs.c.finished_at.is_not(None),
            )
        if retention.max_attempts_per_poll is not None:
            deleted_attempts += self._keep_newest(
                attempts, attempts.c.poll_id, attempts.c.attempt, retention.max_attempts_per_poll
            )
        return PruneReport(
            job_runs=deleted_runs, poll_attempts=deleted_attempts, polls=deleted_polls
        )

    def _delete_where(
        self, table: sa.Table, *conditions: Any, cascade: sa.Column[Any] | None = None
    ) -> int:
        """Delete matching rows in batches; with `cascade`, also the rows naming them."""
        deleted = 0
        while True:
            with self._db.transaction() as connection:
                ids = (
                    connection.execute(sa.select(table.c.id).where(*conditions).limit(_PRUNE_BATCH))
                    .scalars()
                    .all()
                )
                if ids:
                    if cascade is not None:
                        connection.execute(sa.delete(cascade.table).where(cascade.in_(ids)))
                    connection.execute(sa.delete(table).where(table.c.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < _PRUNE_BATCH:
                return deleted

    def _keep_newest(
        self,
        table: sa.Table,
        owner: sa.Column[Any],
        order: sa.Column[Any],
        keep: int,
        *conditions: Any,
    ) -> int:
        with self._db.transaction(read_only=True) as connection:
            crowded = (
                connection.execute(sa.select(owner).group_by(owner).having(sa.func.count() > keep))
                .scalars()
                .all()
            )
        deleted = 0
        for owner_id in crowded:
            with self._db.transaction(read_only=True) as connection:
                boundary = connection.execute(
                    sa.select(order)
                    .where(owner == owner_id)
                    .order_by(order.desc())
                    .offset(keep - 1)
                    .limit(1)
                ).scalar()
            if boundary is not None:
                deleted += self._delete_where(
                    table, owner == owner_id, order < boundary, *conditions
                )
        return deleted
