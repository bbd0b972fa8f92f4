"""The library's tables, in SQLAlchemy Core: only JSON, text, number and time columns.

No column holds pickled or otherwise executable data: functions are stored by their
registered name, arguments/results/triggers as JSON.
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

__all__ = ["ID_LENGTH", "SCHEMA_VERSION", "Tables", "UTCDateTime", "naive_utc", "utcnow"]

# Bumped with every change to the tables below that a database must be migrated for; a
# database at another version is refused at start rather than misread. A new table (such
# as `quarantine`) needs no bump: `create_tables` adds it.
SCHEMA_VERSION = 1

# 191 characters of utf8mb4 is the longest VARCHAR that MySQL/MariaDB can index with the
# default 767-byte key prefix, so ids and names fit every supported database.
ID_LENGTH = 191


def utcnow() -> datetime:
    """Return the current time, aware, in UTC: every time the library stores is one."""
    return datetime.now(UTC)


def naive_utc(value: datetime) -> datetime:
    """Return what a UTCDateTime column stores for an aware `value`: naive UTC.

    Raises:
        ValueError: `value` is naive, so its zone is unknown.
    """
    if value.tzinfo is UTC:  # the engine's own timestamps: no conversion needed
        return value.replace(tzinfo=None)
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware one")
    return value.astimezone(UTC).replace(tzinfo=None)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always read back as aware UTC.

    MySQL's DATETIME keeps whole seconds unless asked for microseconds, so it is
    declared with `fsp=6` there.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def _key() -> sa.types.TypeEngine[str]:
    """An id or name column: compared byte for byte on every database.

    MySQL's and MariaDB's default collations ignore case and accents, so there `abc`,
    `ABC` and `àbc` would be one poll id, and a lookup could return another id's row.
    """
    return sa.String(ID_LENGTH).with_variant(
        mysql.VARCHAR(ID_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


class Tables:
    """The library's tables, named with a configurable prefix."""

    def __init__(self, prefix: str) -> None:
        self.metadata = sa.MetaData()
        self.polls = _polls_table(self.metadata, prefix)
        self.jobs = _jobs_table(self.metadata, prefix)
        self.job_runs = _job_runs_table(self.metadata, prefix)
        self.poll_attempts = _poll_attempts_table(self.metadata, prefix)
        self.quarantine = _quarantine_table(self.metadata, prefix)
        self.workers = _workers_table(self.metadata, prefix)
        self.schema_version = _schema_version_table(self.metadata, prefix)


def _polls_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Per-request polls: one row a poll, with its pacing, budget, state and lease."""
    return sa.Table(
        f"{prefix}polls",
        metadata,
        sa.Column("id", _key(), primary_key=True),
        sa.Column("function", _key(), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("consecutive_errors", sa.Integer, nullable=False),
        # Double, not Float: MySQL's FLOAT keeps ~7 digits (123456.789 -> 123457).
        sa.Column("interval", sa.Double, nullable=False),
        sa.Column("backoff_factor", sa.Double, nullable=False),
        sa.Column("max_interval", sa.Double, nullable=True),
        sa.Column("jitter", sa.Double, nullable=False),
        sa.Column("timeout", sa.Double, nullable=True),
        sa.Column("max_attempts", sa.Integer, nullable=True),
        sa.Column("max_errors", sa.Integer, nullable=False),
        sa.Column("callbacks", _json(), nullable=False),
        sa.Column("callbacks_pending", sa.Boolean, nullable=False),
        sa.Column("callback_attempts", sa.Integer, nullable=False, default=0),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("deadline", UTCDateTime, nullable=True),
        # The dispatch key: when this row next needs a process. For a pending poll,
        # its next attempt; while leased, the lease's expiry (so a crashed holder's
        # work comes due again); NULL once nothing is left to do.
        sa.Column("next_poll_at", UTCDateTime, nullable=True, index=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("progress", _json(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("lease_owner", _key(), nullable=True, index=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Index(f"ix_{prefix}polls_state_function", "state", "function"),
    )


def _jobs_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Scheduled jobs: the function, its JSON arguments and trigger, the next tick."""
    return sa.Table(
        f"{prefix}jobs",
        metadata,
        sa.Column("id", _key(), primary_key=True),
        sa.Column("function", _key(), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("trigger", _json(), nullable=False),
        # NULL while paused or once the trigger has no more ticks.
        sa.Column("next_run_at", UTCDateTime, nullable=True, index=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("misfire_grace_time", sa.Double, nullable=False),
        sa.Column("coalesce", sa.Boolean, nullable=False),
        sa.Column("max_instances", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def _job_runs_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """One row per tick of a job (or run-now), with how it ended."""
    return sa.Table(
        f"{prefix}job_runs",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", _key(), nullable=False),
        sa.Column("function", _key(), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("scheduled_at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        # Same role as polls.next_poll_at: queued runs and expired leases come due.
        sa.Column("due_at", UTCDateTime, nullable=True, index=True),
        sa.Column("worker", _key(), nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        # One run per tick of a job, whichever process claims it.
        sa.UniqueConstraint("job_id", "scheduled_at", name=f"uq_{prefix}job_runs_tick"),
        sa.Index(f"ix_{prefix}job_runs_job_state", "job_id", "state"),
        sa.Index(f"ix_{prefix}job_runs_finished", "finished_at"),
    )


def _poll_attempts_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """The story of a poll: every attempt, or only those that ended it or raised (the
    `attempt_history` setting)."""
    return sa.Table(
        f"{prefix}poll_attempts",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("poll_id", _key(), nullable=False),
        sa.Column("function", _key(), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker", _key(), nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("progress", _json(), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Index(f"ix_{prefix}poll_attempts_poll", "poll_id", "attempt"),
        sa.Index(f"ix_{prefix}poll_attempts_finished", "finished_at"),
    )


def _quarantine_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Rows the engine set aside because it cannot use them (a trigger that does not
    validate, arguments that are not an object, ...): one row each, with the reason.

    A table of its own, not columns, so that the set-aside rows stay as they were, and a
    0.1.0 database gains it by `create_tables` alone.
    """
    return sa.Table(
        f"{prefix}quarantine",
        metadata,
        # "poll" or "job".
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("row_id", _key(), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("found_at", UTCDateTime, nullable=False),
        sa.Column("worker", _key(), nullable=True),
    )


def _workers_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """The worker registry: one row per running process, kept fresh by its heartbeat.

    A table of its own (added by `create_tables` alone). `lock_key`: on PostgreSQL, the
    session-level advisory lock the process holds while its connection lives; the other
    processes read `pg_locks` to see at once that it is gone. NULL elsewhere, and while
    the process does not hold it. On PostgreSQL `heartbeat_at` is the database's clock.
    """
    return sa.Table(
        f"{prefix}workers",
        metadata,
        sa.Column("id", _key(), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        # "engine" (an app with its engine), "worker" (engine only), "client" (no engine).
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        # Its heartbeat period: others judge its silence by it, not by their own.
        sa.Column("heartbeat_seconds", sa.Double, nullable=False),
        # {"poll": [...], "job": [...], "callback": [...]}: what it registers.
        sa.Column("functions", _json(), nullable=False),
        sa.Column("in_flight", sa.Integer, nullable=False),
        sa.Column("threads_stuck", sa.Integer, nullable=False),
        sa.Column("lock_key", sa.BigInteger, nullable=True),
    )


def _schema_version_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """One row: the schema version these tables were created with."""
    return sa.Table(
        f"{prefix}schema_version",
        metadata,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    )
