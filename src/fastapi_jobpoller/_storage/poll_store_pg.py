"""The polls table's two busiest statements for PostgreSQL through psycopg.

The claim and the batched write-back of pending outcomes go to the driver as text, with
values converted once here: SQLAlchemy's processing of every value of every row was the
larger part of these calls. They lock, fence and change exactly what the generic paths in
`attempt_store.py` do.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from ..models import PollState
from .database import Database
from .tables import UTCDateTime, naive_utc

__all__ = ["ACTIVE_STATES", "PsycopgPollPaths"]

ACTIVE_STATES = (PollState.PENDING.value, PollState.RUNNING.value)
"""The states of a poll that has not ended, as stored."""


class PsycopgPollPaths:
    """Raw-SQL claim and write-back of the polls table (PostgreSQL with psycopg)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._table = database.tables.polls
        self._pending_sql: str | None = None
        self._claim_sql: str | None = None
        self._time_columns = {
            column.name for column in self._table.c if isinstance(column.type, UTCDateTime)
        } | {"due_at"}

    def claim(
        self, *, worker: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """`AttemptStore.claim` in one statement: lock, lease and read back the rows, by due time.

        The same rows and values as the generic path, with one round trip instead of a
        SELECT and an UPDATE (whose id list alone is as long as the batch). The statement
        goes to the driver as text and its rows come back as the driver made them, times
        made aware here: SQLAlchemy's processing of every value of every returned row was
        the larger part of this, the engine's busiest call.
        """
        if self._claim_sql is None:
            self._claim_sql = self._claim_statement()
        with self._database.transaction() as connection:
            result = connection.exec_driver_sql(
                self._claim_sql,
                {
                    "now": naive_utc(now),
                    "limit": limit,
                    "worker": worker,
                    "until": naive_utc(lease_until),
                },
            )
            names = list(result.keys())
            raw = result.fetchall()
        times = [i for i, name in enumerate(names) if name in self._time_columns]
        rows = []
        for values in raw:
            row = dict(zip(names, values, strict=True))
            for i in times:
                value = values[i]
                if value is not None:
                    row[names[i]] = value.replace(tzinfo=UTC)
            rows.append(row)
        rows.sort(key=lambda row: row["due_at"])
        return rows

    def _claim_statement(self) -> str:
        """The text of `claim`'s statement, for this table."""
        preparer = self._database.engine.dialect.identifier_preparer
        name = preparer.format_table(self._table)
        columns = ", ".join(f"p.{preparer.quote(c.name)}" for c in self._table.c)
        pending, running = (f"'{state}'" for state in ACTIVE_STATES)
        # Active and not past its deadline: an attempt (counted now); otherwise only leased.
        attempt = (
            f"p.state IN ({pending}, {running}) AND (p.deadline IS NULL OR p.deadline > %(now)s)"
        )
        return (
            f"WITH due AS (SELECT id, next_poll_at AS due_at FROM {name} "
            "WHERE next_poll_at <= %(now)s ORDER BY next_poll_at LIMIT %(limit)s "
            "FOR UPDATE SKIP LOCKED) "
            f"UPDATE {name} AS p SET "
            f"state = CASE WHEN {attempt} THEN '{PollState.RUNNING.value}' ELSE p.state END, "
            f"attempts = CASE WHEN {attempt} THEN p.attempts + 1 ELSE p.attempts END, "
            f"updated_at = CASE WHEN {attempt} THEN %(now)s ELSE p.updated_at END, "
            "lease_owner = %(worker)s, lease_expires_at = %(until)s, next_poll_at = %(until)s "
            f"FROM due WHERE p.id = due.id RETURNING {columns}, due.due_at"
        )

    def update_pending(
        self, connection: Connection, updates: Sequence[Mapping[str, Any]], *, worker: str
    ) -> None:
        """`AttemptStore.write_pending`'s UPDATEs: the same statement per row, fenced the same
        way, but the rows go to the driver as they are (it pipelines them).

        SQLAlchemy's processing of every parameter of every row was the larger part of
        this call's work; here each value is converted once, below.
        """
        from psycopg.types.json import Json

        if self._pending_sql is None:
            name = self._database.engine.dialect.identifier_preparer.format_table(self._table)
            self._pending_sql = (
                f"UPDATE {name} SET state = '{PollState.PENDING.value}', attempts = %s, "
                "consecutive_errors = %s, next_poll_at = %s, progress = %s, error = %s, "
                "updated_at = %s, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = %s AND attempts = %s AND lease_owner = %s "
                f"AND state = '{PollState.RUNNING.value}'"
            )
        rows = [
            (
                u["new_attempts"],
                u["consecutive_errors"],
                naive_utc(u["next_poll_at"]),
                None if u["progress"] is None else Json(u["progress"]),
                u["error"],
                naive_utc(u["updated_at"]),
                u["id"],
                u["attempts"],
                worker,
            )
            for u in updates
        ]
        connection.exec_driver_sql(self._pending_sql, rows)
