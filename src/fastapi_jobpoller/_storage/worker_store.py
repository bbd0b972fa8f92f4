"""Queries on the worker registry: register, beat, list, and find and forget lost workers.

Two ways to find a process gone:
- `take_over_unlocked`, on PostgreSQL, for a process registered with a presence lock
  (`lock_key`): the lock is free, i.e. its database session ended, and it has not beaten
  for `silent_periods` of its own heartbeat period, by the database's clock. A process
  that is merely slow (a long GC pause, a SIGSTOP) keeps its session and its lock; one
  that lost only its listening connection registers again without a lock at its next
  beat. The check and the DELETE are one statement, so a row written again meanwhile is
  never deleted;
- `stale`: its last heartbeat is old. That proves nothing about its leases (a process
  whose heartbeat lags may still renew them), so such a row is only forgotten.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .database import Database, retry_lock_conflicts
from .tables import utcnow

__all__ = ["WorkerStore"]

# Whether a session of this database holds the advisory lock (space, KEY) of a row:
# pg_advisory_lock(int, int) shows in pg_locks as classid, objid with objsubid 2.
_LOCK_HELD = """
SELECT 1 FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND CAST(l.classid AS bigint) = :space AND CAST(l.objid AS bigint) = KEY
"""
# The database's clock, as the naive UTC the time columns hold.
_DB_NOW = "timezone('UTC', now())"


@retry_lock_conflicts
class WorkerStore:
    """The worker registry's queries."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._table = database.tables.workers
        # On PostgreSQL heartbeats are stamped by the database, so that hosts' clocks
        # never make a live process look silent.
        self._db_clock = database.dialect_name == "postgresql"

    def _now(self, now: datetime) -> Any:
        return sa.text(_DB_NOW) if self._db_clock else now

    def register(self, row: Mapping[str, Any]) -> None:
        """Write this process's row, replacing one of the same id."""
        table = self._table
        with self._db.transaction() as connection:
            connection.execute(sa.delete(table).where(table.c.id == row["id"]))
            connection.execute(
                sa.insert(table).values(**{**row, "heartbeat_at": self._now(row["heartbeat_at"])})
            )

    def beat(
        self,
        worker_id: str,
        *,
        now: datetime,
        in_flight: int,
        threads_stuck: int,
        lock_key: int | None,
    ) -> bool:
        """Refresh this process's row; False if it is gone (another process forgot it)
        or holds another lock key (then it is written again)."""
        table = self._table
        same_lock = table.c.lock_key.is_(None) if lock_key is None else table.c.lock_key == lock_key
        with self._db.transaction() as connection:
            result = connection.execute(
                sa.update(table)
                .where(table.c.id == worker_id, same_lock)
                .values(
                    heartbeat_at=self._now(now), in_flight=in_flight, threads_stuck=threads_stuck
                )
            )
        return bool(result.rowcount)

    def holds_lock(self, lock: tuple[int, int]) -> bool:
        """Return whether some session holds this presence lock (PostgreSQL)."""
        query = sa.text(f"SELECT EXISTS ({_LOCK_HELD.replace('KEY', ':key')})")
        with self._db.transaction(read_only=True) as connection:
            return bool(connection.execute(query, {"space": lock[0], "key": lock[1]}).scalar())

    def forget(self, worker_id: str) -> bool:
        """Delete a row; True if this call deleted it."""
        table = self._table
        with self._db.transaction() as connection:
            result = connection.execute(sa.delete(table).where(table.c.id == worker_id))
        return bool(result.rowcount)

    def list_rows(self) -> list[dict[str, Any]]:
        """Return every row, oldest process first."""
        table = self._table
        with self._db.transaction(read_only=True) as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.started_at, table.c.id))
            return [dict(row._mapping) for row in rows]

    def take_over_unlocked(
        self,
        *,
        me: str,
        lock: tuple[int, int],
        my_period: float,
        silent_periods: float,
        settled_seconds: float,
    ) -> list[str]:
        """Delete the rows of processes whose session ended (see the module's docstring)
        and return their ids; this call alone takes each one over.

        Done only while this process's own lock (`lock`: space and key) is held, so a
        process cut off from the database itself takes nobody over, and never within
        `settled_seconds` of the server's start, when the others may not have taken their
        locks again yet. Silence is judged by the longer of the two heartbeat periods.
        """
        table = self._table
        statement = sa.text(
            f'DELETE FROM "{table.name}" w '
            "WHERE w.id <> :me AND w.lock_key IS NOT NULL "
            f"AND w.heartbeat_at < {_DB_NOW} - make_interval(secs => "
            ":silent * GREATEST(w.heartbeat_seconds, :my_period)) "
            f"AND NOT EXISTS ({_LOCK_HELD.replace('KEY', 'w.lock_key')}) "
            f"AND EXISTS ({_LOCK_HELD.replace('KEY', ':my_key')}) "
            "AND now() - pg_postmaster_start_time() > make_interval(secs => :settled) "
            "RETURNING w.id"
        )
        parameters = {
            "me": me,
            "space": lock[0],
            "my_key": lock[1],
            "my_period": my_period,
            "silent": silent_periods,
            "settled": settled_seconds,
        }
        with self._db.transaction() as connection:
            return sorted(connection.execute(statement, parameters).scalars())

    def wake_everyone(self) -> None:
        """Wake every engine (PostgreSQL NOTIFY): work came due, e.g. after a takeover."""
        with self._db.transaction() as connection:
            self._db.announce_change(connection)

    def stale(self, *, me: str, before: datetime) -> list[str]:
        """Return the processes whose last heartbeat is older than `before`."""
        table = self._table
        query = sa.select(table.c.id).where(table.c.id != me, table.c.heartbeat_at < before)
        with self._db.transaction(read_only=True) as connection:
            return list(connection.execute(query.order_by(table.c.id)).scalars())

    def functions_alive(self, *, within_seconds: float) -> dict[str, set[str]]:
        """Return the names each kind of function has in some engine that beat within
        the last `within_seconds` (the callers pass `lease_seconds`)."""
        table = self._table
        alive_after = utcnow() - timedelta(seconds=within_seconds)
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
