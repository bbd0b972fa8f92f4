"""The quarantine table: rows the engine set aside, and why.

A quarantined job is left out of every claim until its record is gone; a quarantined poll
is parked (no `next_poll_at`). Records are written in the transaction that sets the row
aside, and deleted when the row is fixed (through the API, or found fixed by the engine's
periodic re-check), or when the row itself is deleted.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .database import Database, retry_lock_conflicts

__all__ = ["Kind", "QuarantineStore", "forget_quarantine", "is_quarantined", "record_quarantine"]

Kind = Literal["poll", "job"]


def record_quarantine(
    connection: Connection,
    table: sa.Table,
    *,
    kind: Kind,
    row_id: str,
    reason: str,
    worker: str,
    now: datetime,
) -> bool:
    """Set a row aside in the caller's transaction; return False if it already was."""
    exists = connection.execute(
        sa.select(table.c.row_id).where(table.c.kind == kind, table.c.row_id == row_id)
    ).first()
    if exists is not None:
        return False
    connection.execute(
        sa.insert(table).values(
            kind=kind, row_id=row_id, reason=reason, found_at=now, worker=worker
        )
    )
    return True


def forget_quarantine(connection: Connection, table: sa.Table, *, kind: Kind, row_id: str) -> None:
    """Delete a row's quarantine record, if any, in the caller's transaction."""
    connection.execute(sa.delete(table).where(table.c.kind == kind, table.c.row_id == row_id))


def is_quarantined(table: sa.Table, kind: Kind, row_id_column: Any) -> Any:
    """Return a condition: the row whose id is in `row_id_column` is set aside."""
    return sa.exists().where(table.c.kind == kind, table.c.row_id == row_id_column)


@retry_lock_conflicts
class QuarantineStore:
    """Reading and releasing quarantine records."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.quarantine

    def list_records(
        self,
        *,
        kind: Kind | None = None,
        oldest_first: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Return records, the most recent first (or the oldest)."""
        table = self._table
        found_at = table.c.found_at if oldest_first else table.c.found_at.desc()
        query = sa.select(table).order_by(found_at, table.c.kind, table.c.row_id)
        if kind is not None:
            query = query.where(table.c.kind == kind)
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [dict(row._mapping) for row in rows]

    def count(self) -> dict[str, int]:
        """Return how many rows of each kind are set aside."""
        table = self._table
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(
                sa.select(table.c.kind, sa.func.count()).group_by(table.c.kind)
            ).all()
        return {kind: int(count) for kind, count in rows}

    def release(self, kind: Kind, row_ids: Sequence[str]) -> None:
        """Delete the records of rows found fixed (or gone)."""
        if not row_ids:
            return
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(
                sa.delete(table).where(table.c.kind == kind, table.c.row_id.in_(list(row_ids)))
            )
