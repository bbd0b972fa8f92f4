"""Queries on the polls table for the engine: claim due polls, write outcomes, keep leases.

Outcome writes are fenced: they only land while the row is still leased by this worker
for the same attempt, so a late result from a process that lost its lease is ignored.
Every statement that locks several poll rows locks them in id order, so two of them never
wait for each other. Every function is synchronous and runs in a worker thread.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..models import PollState
from .database import Database, retry_lock_conflicts
from .poll_store_pg import ACTIVE_STATES, PsycopgPollPaths
from .quarantine_store import record_quarantine

__all__ = ["AttemptStore", "Claim"]


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


@retry_lock_conflicts
class AttemptStore:
    """The engine's queries on the polls table."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.polls
        self._attempts = database.tables.poll_attempts
        self._quarantine = database.tables.quarantine
        # PostgreSQL through psycopg: the engine's two busiest statements as raw SQL.
        self._psycopg = PsycopgPollPaths(database) if database.psycopg else None

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
        `consecutive_errors`, `next_poll_at`, `progress`, `error` and `updated_at`. An
        update lands only while this worker still holds the poll for that attempt; the
        `history` rows of the updates that landed go to the attempts table in the same
        transaction, and those of fenced-off updates are dropped with them.
        """
        if not updates:
            return
        # Rows are locked in id order by every statement that locks several poll rows,
        # so two of them can never wait for each other (a deadlock).
        updates = sorted(updates, key=lambda update: str(update["id"]))
        with self._db.transaction() as connection:
            if self._psycopg is not None:
                self._psycopg.update_pending(connection, updates, worker=worker)
            else:
                connection.execute(self._pending_statement(), _pending_parameters(updates, worker))
            landed = self._landed(connection, updates) if history else set()
            kept = [h for h in history if (h["poll_id"], h["attempt"]) in landed]
            if kept:
                # A batch written again after a commit whose answer was lost finds its
                # rows already stored: they are not inserted twice.
                attempts, stored = self._attempts, set[str]()
                for chunk in _chunks([h["id"] for h in kept]):
                    found = connection.execute(
                        sa.select(attempts.c.id).where(attempts.c.id.in_(chunk))
                    )
                    stored.update(found.scalars())
                kept = [h for h in kept if h["id"] not in stored]
            if kept:
                connection.execute(sa.insert(self._attempts), kept)

    def _pending_statement(self) -> sa.Update:
        table = self._table
        return (
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

    def _landed(
        self, connection: Connection, updates: Sequence[Mapping[str, Any]]
    ) -> set[tuple[str, int]]:
        """Return `(poll id, fencing token)` of the updates whose values the rows now hold.

        A landed update left its poll pending, unleased, with its own `updated_at` and
        attempt count (written by this transaction, or by an earlier try of the same
        batch); a fenced-off one left the row as another process or a cancel made it.
        """
        table = self._table
        stored: dict[str, tuple[int, datetime]] = {}
        for chunk in _chunks([str(u["id"]) for u in updates]):
            rows = connection.execute(
                sa.select(table.c.id, table.c.attempts, table.c.updated_at).where(
                    table.c.id.in_(chunk),
                    table.c.state == PollState.PENDING.value,
                    table.c.lease_owner.is_(None),
                )
            )
            stored.update((row.id, (row.attempts, row.updated_at)) for row in rows)
        return {
            (u["id"], u["attempts"])
            for u in updates
            if stored.get(u["id"]) == (u["new_attempts"], u["updated_at"])
        }

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

    def quarantine(
        self, row: Mapping[str, Any], *, worker: str, reason: str, now: datetime
    ) -> bool:
        """Set aside a poll this worker holds: park it, record why; return whether it landed.

        An active poll goes back to pending with its attempt uncounted (none ran) and the
        reason in `error`; an ended one keeps its state, result and error, its callbacks
        still pending. Either way it has no `next_poll_at` until it is released.
        """
        table = self._table
        active = row["state"] in ACTIVE_STATES
        values: dict[str, Any] = {
            "next_poll_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if active:
            values.update(state=PollState.PENDING.value, attempts=row["attempts"] - 1, error=reason)
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(table)
                .where(
                    table.c.id == row["id"],
                    table.c.attempts == row["attempts"],
                    table.c.lease_owner == worker,
                )
                .values(**values)
            )
            if not result.rowcount:
                return False
            record_quarantine(
                connection,
                self._quarantine,
                kind="poll",
                row_id=row["id"],
                reason=reason,
                worker=worker,
                now=now,
            )
        return True

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

    def release_for_retry(
        self, poll_id: str, *, worker: str, at: datetime, give_up: bool, count: bool = True
    ) -> None:
        """Count a failed callback delivery (unless `count` is false: it never ran); try
        again at `at`, or give up for good."""
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.id == poll_id, table.c.lease_owner == worker)
                .values(
                    callback_attempts=table.c.callback_attempts + (1 if count else 0),
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
        held = (table.c.lease_owner == worker, table.c.next_poll_at.is_not(None))
        with self._db.transaction() as connection:
            for chunk in _chunks(sorted(set(poll_ids))):
                self._lock_in_order(connection, table.c.id.in_(chunk), *held)
                result = connection.execute(
                    sa.update(table)
                    .where(table.c.id.in_(chunk), *held)
                    .values(lease_expires_at=lease_until, next_poll_at=lease_until)
                )
                renewed += int(result.rowcount)
        return renewed

    def release_leases(self, *, worker: str, now: datetime) -> int:
        """Hand this worker's unfinished rows back at once (used at shutdown)."""
        table = self._table
        held = (table.c.lease_owner == worker, table.c.next_poll_at.is_not(None))
        with self._db.transaction() as connection:
            self._lock_in_order(connection, *held)
            result = connection.execute(
                sa.update(table).where(*held).values(lease_expires_at=now, next_poll_at=now)
            )
        return int(result.rowcount)

    def _lock_in_order(self, connection: Connection, *conditions: Any) -> None:
        """Lock the rows an UPDATE of several rows will change, in id order, first.

        An UPDATE locks rows in whatever order its plan visits them; two statements that
        visit shared rows in different orders can deadlock (here: lease renewal and the
        write-back of outcomes). Every multi-row statement on polls locks by id instead.
        SQLite has one writer at a time and no row locks: nothing to do there.
        """
        if self._db.skip_locked:
            table = self._table
            # Code-point order, as Python sorts the write-back: PostgreSQL's default
            # collation may sort otherwise; MySQL's ids are utf8mb4_bin already.
            order = table.c.id.collate("C") if self._db.dialect_name == "postgresql" else table.c.id
            connection.execute(
                sa.select(table.c.id).where(*conditions).order_by(order).with_for_update()
            ).all()

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


def _pending_parameters(updates: Sequence[Mapping[str, Any]], worker: str) -> list[dict[str, Any]]:
    return [
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
