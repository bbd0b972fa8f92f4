"""Queries on the worker registry: register, beat, list, and find and forget lost workers.

Two ways to find a process gone:
- `unlocked`, on PostgreSQL, for a process registered with a presence lock (`lock_key`):
  the lock is free, i.e. its database session ended, and its heartbeat stopped. A process
  that is merely slow (a long GC pause, a SIGSTOP) keeps its session and its lock, so it is
  never found this way;
- `stale`: its last heartbeat is old. That proves nothing about its leases (a process
  whose heartbeat lags may still renew them), so such a row is only forgotten.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .database import Database, retry_lock_conflicts
from .tables import naive_utc

__all__ = ["WorkerStore"]

# Whether a session of this database holds the advisory lock (space, key) of a row:
# pg_advisory_lock(int, int) shows in pg_locks as classid, objid with objsubid 2.
_LOCK_HELD = """
SELECT 1 FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND CAST(l.classid AS bigint) = :space AND CAST(l.objid AS bigint) = w.lock_key
"""


@retry_lock_conflicts
class WorkerStore:
    """The worker registry's queries."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.workers

    def register(self, row: Mapping[str, Any]) -> None:
        """Write this process's row, replacing one of the same id."""
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(sa.delete(table).where(table.c.id == row["id"]))
            connection.execute(sa.insert(table).values(**row))

    def beat(self, worker_id: str, *, now: datetime, in_flight: int, threads_stuck: int) -> bool:
        """Refresh this process's row; False if it is gone (another process forgot it)."""
        table = self._table
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(table)
                .where(table.c.id == worker_id)
                .values(heartbeat_at=now, in_flight=in_flight, threads_stuck=threads_stuck)
            )
        return bool(result.rowcount)

    def forget(self, worker_id: str, *, announce: bool = False) -> bool:
        """Delete a row; True if this call deleted it (so only one process takes over).

        `announce`: wake every engine, for the work the forgotten process held.
        """
        table = self._table
        with self._db.transaction() as connection:
            result = connection.execute(sa.delete(table).where(table.c.id == worker_id))
            if announce and result.rowcount:
                self._db.announce_change(connection)
        return bool(result.rowcount)

    def list_rows(self) -> list[dict[str, Any]]:
        """Return every row, oldest process first."""
        table = self._table
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.started_at, table.c.id))
            return [dict(row._mapping) for row in rows]

    def unlocked(
        self, *, me: str, lock: tuple[int, int], stale_before: datetime, settled_seconds: float
    ) -> list[str]:
        """Return the processes whose session ended: registered with a presence lock that
        no session holds, and silent since `stale_before`.

        Asked only while this process's own lock (`lock`: space and key) is held, so a
        process cut off from the database itself finds nobody, and never within
        `settled_seconds` of the server's start, when the others may not have taken their
        locks again yet. The heartbeat fences a process that lost only its listening
        connection: its heartbeats go on through other connections.
        """
        table = self._table
        query = sa.text(
            f'SELECT w.id FROM "{table.name}" w '
            "WHERE w.id <> :me AND w.lock_key IS NOT NULL AND w.heartbeat_at < :stale "
            f"AND NOT EXISTS ({_LOCK_HELD}) "
            f"AND EXISTS ({_LOCK_HELD.replace('w.lock_key', ':my_key')}) "
            "AND now() - pg_postmaster_start_time() > make_interval(secs => :settled) "
            "ORDER BY w.id"
        )
        parameters = {
            "me": me,
            "space": lock[0],
            "my_key": lock[1],
            "stale": naive_utc(stale_before),
            "settled": settled_seconds,
        }
        with self._db.transaction(read_only=True) as connection:
            return list(connection.execute(query, parameters).scalars())

    def stale(self, *, me: str, before: datetime) -> list[str]:
        """Return the processes whose last heartbeat is older than `before`."""
        table = self._table
        query = sa.select(table.c.id).where(table.c.id != me, table.c.heartbeat_at < before)
        with self._db.transaction(read_only=True) as connection:
            return list(connection.execute(query.order_by(table.c.id)).scalars())

    def functions_alive(self, *, alive_after: datetime) -> dict[str, set[str]]:
        """Return the names each kind of function has in some process alive lately."""
        table = self._table
        names: dict[str, set[str]] = {"poll": set(), "job": set(), "callback": set()}
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(
                sa.select(table.c.functions).where(
                    table.c.heartbeat_at >= alive_after, table.c.role != "client"
                )
            )
            for (functions,) in rows:
                for kind, registered in _as_mapping(functions).items():
                    if kind in names and isinstance(registered, list):
                        names[kind].update(str(name) for name in registered)
        return names


def _as_mapping(value: Any) -> Mapping[str, Sequence[Any]]:
    return value if isinstance(value, Mapping) else {}
