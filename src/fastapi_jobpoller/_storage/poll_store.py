"""Queries on the polls table: submit, read, list, cancel, claim, write outcomes.

Every function is synchronous and runs in a worker thread, never on the event loop.
Outcome writes are fenced: they only land while the row is still leased by this worker
for the same attempt, so a late result from a process that lost its lease is ignored.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from ..exceptions import InvalidStateError, PollConflictError, PollNotFoundError
from ..models import PollState
from .database import Database
from .poll_store_pg import ACTIVE_STATES, PsycopgPollPaths

__all__ = ["Claim", "PollStore"]


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows this worker now holds, by what it must do with them."""

    attempts: list[dict[str, Any]]
    """Run an attempt (`attempts` already counts it)."""
    expired: list[dict[str, Any]]
    """Past the deadline: record the timeout without calling the function."""
    callbacks: list[dict[str, Any]]
    """Terminal with callbacks still to deliver."""

    def __len__(self) -> int:
        return len(self.attempts) + len(self.expired) + len(self.callbacks)


class PollStore:
    """The polls table's queries."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.polls
        self._attempts = database.tables.poll_attempts
        # PostgreSQL through psycopg: the engine's two busiest statements as raw SQL.
        self._psycopg = PsycopgPollPaths(database) if database.psycopg else None

    def insert(
        self, row: Mapping[str, Any], *, announce: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """Insert a new poll, or return the existing one with that id.

        `announce`: wake the other processes (PostgreSQL). Not needed for a poll first
        due well after their longest idle sleep: they look before it is due anyway.

        Returns:
            The stored row and whether it was created now.

        Raises:
            PollConflictError: The id is taken by a poll of another function or with
                other arguments.
        """
        try:
            with self._db.transaction() as connection:
                # The row as parameters, not .values(**row): the compiled INSERT is reused.
                connection.execute(sa.insert(self._table), dict(row))
                if announce:
                    self._db.announce_change(connection, "polls")
            return dict(row), True
        except exc.IntegrityError:
            existing = self.get(row["id"])
            if existing is None:  # deleted between the two statements: try once more
                return self.insert(row, announce=announce)
            if existing["function"] != row["function"] or existing["arguments"] != row["arguments"]:
                raise PollConflictError(
                    f"poll {row['id']!r} exists with another function or other arguments"
                ) from None
            return existing, False

    def get(self, poll_id: str) -> dict[str, Any] | None:
        """Return one poll's row, or None."""
        with self._db.transaction(read_only=True) as connection:
            row = connection.execute(
                sa.select(self._table).where(self._table.c.id == poll_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def list_polls(
        self,
        *,
        states: Sequence[PollState] = (),
        function: str | None = None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        """Return polls, newest first, filtered by state and function."""
        table = self._table
        query = sa.select(table).order_by(table.c.created_at.desc(), table.c.id)
        if states:
            query = query.where(table.c.state.in_([s.value for s in states]))
        if function is not None:
            query = query.where(table.c.function == function)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(r._mapping) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """Return how many polls are in each state that has any."""
        table = self._table
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(
                sa.select(table.c.state, sa.func.count()).group_by(table.c.state)
            ).all()
        return {state: int(count) for state, count in rows}

    def cancel(self, poll_id: str, now: datetime) -> dict[str, Any]:
        """Move a pending or running poll to cancelled; its callbacks then come due.

        Raises:
            PollNotFoundError: No poll has that id.
            InvalidStateError: The poll has already ended.
        """
        table = self._table
        with self._db.transaction() as connection:
            callbacks = connection.execute(
                sa.select(table.c.callbacks).where(table.c.id == poll_id)
            ).scalar_one_or_none()
            if callbacks is None:
                raise PollNotFoundError(f"no poll has id {poll_id!r}")
            updated = connection.execute(
                sa.update(table)
                .where(table.c.id == poll_id, table.c.state.in_(ACTIVE_STATES))
                .values(
                    state=PollState.CANCELLED.value,
                    finished_at=now,
                    updated_at=now,
                    error="cancelled",
                    callbacks_pending=bool(callbacks),
                    next_poll_at=now if callbacks else None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if updated.rowcount == 0:
                raise InvalidStateError(f"poll {poll_id!r} has already ended")
            if callbacks:
                self._db.announce_change(connection, "polls")
            row = connection.execute(sa.select(table).where(table.c.id == poll_id)).one()
        return dict(row._mapping)

    def claim(self, *, worker: str, now: datetime, lease_until: datetime, limit: int) -> Claim:
        """Lease up to `limit` due polls to `worker` until `lease_until`."""
        if self._psycopg is not None:
            rows = self._psycopg.claim(worker=worker, now=now, lease_until=lease_until, limit=limit)
            return _sort_claimed(rows, now)
        table = self._table
        due = (
            sa.select(table)
            .where(table.c.next_poll_at <= now)
            .order_by(table.c.next_poll_at)
            .limit(limit)
        )
        if self._db.skip_locked:
            due = due.with_for_update(skip_locked=True)
        with self._db.transaction() as connection:
            rows = [dict(r._mapping) for r in connection.execute(due)]
            if not rows:
                return Claim([], [], [])
            for row in rows:
                row["due_at"] = row["next_poll_at"]
            claim = _sort_claimed(rows, now)
            lease = {
                "lease_owner": worker,
                "lease_expires_at": lease_until,
                "next_poll_at": lease_until,
            }
            if claim.attempts:
                connection.execute(
                    sa.update(table)
                    .where(table.c.id.in_([r["id"] for r in claim.attempts]))
                    .values(
                        state=PollState.RUNNING.value,
                        attempts=table.c.attempts + 1,
                        updated_at=now,
                        **lease,
                    )
                )
            held = claim.expired + claim.callbacks
            if held:
                connection.execute(
                    sa.update(table).where(table.c.id.in_([r["id"] for r in held])).values(**lease)
                )
        for row in claim.attempts:
            row.update(state=PollState.RUNNING.value, attempts=row["attempts"] + 1, **lease)
        for row in held:
            row.update(lease)
        return claim

    def write_pending(
        self,
        updates: Sequence[Mapping[str, Any]],
        *,
        worker: str,
        history: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Write back attempts that leave their polls pending, in one batch.

        Each update has `id`, `attempts` (the fencing token), `new_attempts`,
        `consecutive_errors`, `next_poll_at`, `progress`, `error` and `updated_at`;
        `history` rows go to the attempts table in the same transaction.
        """
        if not updates:
            return
        if self._psycopg is not None:
            self._psycopg.write_pending(updates, worker=worker, history=history)
            return
        table = self._table
        statement = (
            sa.update(table)
            .where(
                table.c.id == sa.bindparam("b_id"),
                table.c.attempts == sa.bindparam("b_attempts"),
                table.c.lease_owner == sa.bindparam("b_worker"),
                table.c.state == PollState.RUNNING.value,
            )
            .values(
                state=PollState.PENDING.value,
                attempts=sa.bindparam("b_new_attempts"),
                consecutive_errors=sa.bindparam("b_errors"),
                next_poll_at=sa.bindparam("b_next"),
                progress=sa.bindparam("b_progress"),
                error=sa.bindparam("b_error"),
                updated_at=sa.bindparam("b_now"),
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        parameters = [
            {
                "b_id": u["id"],
                "b_attempts": u["attempts"],
                "b_new_attempts": u["new_attempts"],
                "b_worker": worker,
                "b_errors": u["consecutive_errors"],
                "b_next": u["next_poll_at"],
                "b_progress": u["progress"],
                "b_error": u["error"],
                "b_now": u["updated_at"],
            }
            for u in updates
        ]
        with self._db.transaction() as connection:
            connection.execute(statement, parameters)
            if history:
                connection.execute(sa.insert(self._attempts), list(history))

    def write_terminal(
        self,
        poll_id: str,
        *,
        worker: str,
        attempts: int,
        values: Mapping[str, Any],
        now: datetime,
        lease_until: datetime,
        history: Mapping[str, Any] | None = None,
    ) -> bool:
        """End a poll this worker holds; keep the lease if callbacks are to run.

        Returns:
            Whether the write landed (False: the lease was lost, or it was cancelled).
        """
        table = self._table
        callbacks_pending = bool(values["callbacks_pending"])
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(table)
                .where(
                    table.c.id == poll_id,
                    table.c.attempts == attempts,
                    table.c.lease_owner == worker,
                    table.c.state.in_(ACTIVE_STATES),
                )
                .values(
                    **values,
                    finished_at=now,
                    updated_at=now,
                    next_poll_at=lease_until if callbacks_pending else None,
                    lease_owner=worker if callbacks_pending else None,
                    lease_expires_at=lease_until if callbacks_pending else None,
                )
            )
            if result.rowcount and history is not None:
                connection.execute(sa.insert(self._attempts).values(**history))
        return bool(result.rowcount)

    def finish_callbacks(self, poll_id: str, *, worker: str, now: datetime) -> None:
        """Mark a terminal poll's callbacks as delivered and release it."""
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.id == poll_id, table.c.lease_owner == worker)
                .values(
                    callbacks_pending=False,
                    next_poll_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )

    def release_for_retry(self, poll_id: str, *, worker: str, at: datetime, give_up: bool) -> None:
        """Count a failed callback delivery; try again at `at`, or give up for good."""
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.id == poll_id, table.c.lease_owner == worker)
                .values(
                    callback_attempts=table.c.callback_attempts + 1,
                    callbacks_pending=not give_up,
                    next_poll_at=None if give_up else at,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )

    def renew_leases(self, poll_ids: Sequence[str], *, worker: str, lease_until: datetime) -> int:
        """Extend this worker's leases on the polls it is working on; return how many."""
        table = self._table
        renewed = 0
        with self._db.transaction() as connection:
            for chunk in _chunks(poll_ids):
                result = connection.execute(
                    sa.update(table)
                    .where(
                        table.c.id.in_(chunk),
                        table.c.lease_owner == worker,
                        table.c.next_poll_at.is_not(None),
                    )
                    .values(lease_expires_at=lease_until, next_poll_at=lease_until)
                )
                renewed += int(result.rowcount)
        return renewed

    def release_leases(self, *, worker: str, now: datetime) -> int:
        """Hand this worker's unfinished rows back at once (used at shutdown)."""
        table = self._table
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(table)
                .where(table.c.lease_owner == worker, table.c.next_poll_at.is_not(None))
                .values(lease_expires_at=now, next_poll_at=now)
            )
        return int(result.rowcount)

    def next_due(self) -> datetime | None:
        """Return the earliest `next_poll_at`, or None if nothing is waiting."""
        with self._db.transaction(read_only=True) as connection:
            value: datetime | None = connection.execute(
                sa.select(sa.func.min(self._table.c.next_poll_at))
            ).scalar()
        return None if value is None else _aware(value)


# Ids per IN (...) list: well inside every database's limit on bound parameters.
_IDS_PER_STATEMENT = 500


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + _IDS_PER_STATEMENT] for i in range(0, len(ids), _IDS_PER_STATEMENT)]


def _aware(value: datetime) -> datetime:
    # func.min() loses the column type on some dialects, so re-attach UTC by hand.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sort_claimed(rows: list[dict[str, Any]], now: datetime) -> Claim:
    """Sort claimed rows by what is to be done with them (their `state` as before the claim)."""
    attempts, expired, callbacks = [], [], []
    for row in rows:
        if row["state"] not in ACTIVE_STATES:
            callbacks.append(row)
        elif row["deadline"] is not None and row["deadline"] <= now:
            expired.append(row)
        else:
            attempts.append(row)
    return Claim(attempts, expired, callbacks)
