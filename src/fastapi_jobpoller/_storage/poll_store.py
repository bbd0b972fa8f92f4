"""Queries on the polls table for the API: submit, read, list, count, cancel, release.

The engine's side (claims, fenced outcome writes, leases) is in `attempt_store.py`.
Every function is synchronous and runs in a worker thread, never on the event loop.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from ..exceptions import InvalidStateError, PollConflictError, PollNotFoundError
from ..models import PollState
from .database import Database, retry_lock_conflicts
from .poll_store_pg import ACTIVE_STATES
from .quarantine_store import forget_quarantine

__all__ = ["PollStore"]


@retry_lock_conflicts
class PollStore:
    """The polls table's queries."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.polls
        self._quarantine = database.tables.quarantine

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

    def _select(self) -> sa.Select[Any]:
        """Select polls with the reason of a quarantine record, if any, as `problem`."""
        table, quarantine = self._table, self._quarantine
        return sa.select(table, quarantine.c.reason.label("problem")).outerjoin(
            quarantine, sa.and_(quarantine.c.kind == "poll", quarantine.c.row_id == table.c.id)
        )

    def get(self, poll_id: str) -> dict[str, Any] | None:
        """Return one poll's row (with `problem`), or None."""
        with self._db.transaction(read_only=True) as connection:
            row = connection.execute(self._select().where(self._table.c.id == poll_id)).first()
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
        query = self._select().order_by(table.c.created_at.desc(), table.c.id)
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

    def overdue_by_function(self, *, before: datetime) -> dict[str, int]:
        """Return, per function, how many active polls were due before `before`."""
        table = self._table
        query = (
            sa.select(table.c.function, sa.func.count())
            .where(table.c.next_poll_at < before, table.c.state.in_(ACTIVE_STATES))
            .group_by(table.c.function)
        )
        with self._db.transaction(read_only=True) as connection:
            return {function: int(count) for function, count in connection.execute(query)}

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
            # Cancelled: whatever set it aside no longer stops anything.
            forget_quarantine(connection, self._quarantine, kind="poll", row_id=poll_id)
            row = connection.execute(sa.select(table).where(table.c.id == poll_id)).one()
        return dict(row._mapping)

    def release(self, poll_id: str, *, now: datetime) -> None:
        """Release a poll found fixed: delete its quarantine record and, in the same
        transaction, make it due now if it is parked (no `next_poll_at`, no lease, not
        ended or with callbacks to deliver). An active poll's `error` (the reason it was
        set aside) is cleared; an ended one keeps its own."""
        table, quarantine = self._table, self._quarantine
        parked = (
            table.c.id == poll_id,
            table.c.next_poll_at.is_(None),
            table.c.lease_owner.is_(None),
        )
        with self._db.transaction() as connection:
            active = connection.execute(
                sa.update(table)
                .where(*parked, table.c.state.in_(ACTIVE_STATES))
                .values(next_poll_at=now, error=None, updated_at=now)
            )
            ended = connection.execute(
                sa.update(table)
                .where(*parked, table.c.state.not_in(ACTIVE_STATES), table.c.callbacks_pending)
                .values(next_poll_at=now, updated_at=now)
            )
            forget_quarantine(connection, quarantine, kind="poll", row_id=poll_id)
            if active.rowcount or ended.rowcount:
                self._db.announce_change(connection, "polls")
