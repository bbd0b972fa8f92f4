"""The SQLAlchemy engine, per-database quirks, schema creation and error translation."""

import functools
import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

from ..exceptions import ConfigurationError, DatabaseUnavailableError
from .tables import SCHEMA_VERSION, Tables

__all__ = ["Database", "LockConflictError", "retry_lock_conflicts"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How long SQLite waits for another connection's write lock before giving up (ms).
_SQLITE_BUSY_TIMEOUT_MS = 30_000
# Tries of a transaction that lost a deadlock or a lock wait, and the first pause between
# them (doubling): enough for the other transaction to commit.
_LOCK_CONFLICT_TRIES = 4
_LOCK_CONFLICT_PAUSE_SECONDS = 0.02
# Pause between two tries of the switch to WAL while another connection holds the file.
_WAL_RETRY_SECONDS = 0.01
# An arbitrary but fixed key for PostgreSQL's advisory lock around schema creation.
_SCHEMA_LOCK_KEY = 0x6A6F62706F6C6C  # "jobpoll"


class Database:
    """One engine plus the tables, with the few things that differ per dialect.

    Writes on SQLite run in `BEGIN IMMEDIATE` transactions, so a claim takes the write
    lock up front and several processes never claim the same row. PostgreSQL, MySQL 8
    and MariaDB 10.6+ claim with `SELECT ... FOR UPDATE SKIP LOCKED` instead.
    """

    def __init__(self, url: str, *, table_prefix: str, pool_size: int = 10) -> None:
        try:
            parsed = sa.make_url(url)
        except exc.ArgumentError as error:
            raise ConfigurationError(f"invalid database URL: {error}") from None
        self.dialect_name = parsed.get_backend_name()
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect_name == "sqlite":
            _check_sqlite_file(parsed.database)
        else:
            options.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=1800)
        try:
            self.engine: Engine = sa.create_engine(parsed, **options)
        except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
            raise ConfigurationError(f"cannot use database URL: {error}") from None
        if self.dialect_name == "sqlite":
            _configure_sqlite(self.engine)
        self.tables = Tables(table_prefix)
        self.skip_locked = self.dialect_name in ("postgresql", "mysql", "mariadb")
        self.url = parsed
        self.change_channel = f"{table_prefix}changes"
        # PostgreSQL through psycopg 3: the driver the engine's fastest paths are written
        # for, and the one that tells other processes about new work at once.
        self.psycopg = self.dialect_name == "postgresql" and parsed.get_driver_name() == "psycopg"
        self.notifies = self.psycopg

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Connection]:
        """Yield a connection in a transaction that commits on success.

        Raises:
            DatabaseUnavailableError: The database could not be reached.
        """
        try:
            with self.engine.connect() as connection:
                if read_only and self.dialect_name == "sqlite":
                    connection = connection.execution_options(jobpoller_read_only=True)
                with connection.begin():
                    yield connection
        except (exc.OperationalError, exc.InterfaceError) as error:
            if _is_lock_conflict(error):
                raise LockConflictError(f"lock conflict: {type(error.orig).__name__}") from error
            raise _unavailable(error, self.url) from error
        except exc.DBAPIError as error:
            if _is_lock_conflict(error):
                raise LockConflictError(f"lock conflict: {type(error.orig).__name__}") from error
            if error.connection_invalidated:
                raise _unavailable(error, self.url) from error
            raise

    def announce_change(self, connection: Connection, subject: str = "jobs") -> None:
        """Wake the other processes when this transaction commits (PostgreSQL only).

        `subject` ("polls" or "jobs") is the payload: a poll change does not make the
        listeners look for job work.
        """
        if self.notifies:
            connection.execute(
                sa.text("SELECT pg_notify(:channel, :subject)"),
                {"channel": self.change_channel, "subject": subject},
            )

    def ping(self) -> None:
        """Run a trivial query.

        Raises:
            DatabaseUnavailableError: The database could not be reached.
        """
        with self.transaction(read_only=True) as connection:
            connection.execute(sa.text("SELECT 1"))

    def create_schema(self) -> None:
        """Create the tables that are missing, once even if many processes start at once."""
        with self.transaction() as connection:
            if self.dialect_name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
            elif self.dialect_name in ("mysql", "mariadb"):
                connection.execute(sa.text("SELECT GET_LOCK('jobpoller_schema', 60)"))
            try:
                self.tables.metadata.create_all(connection, checkfirst=True)
                self._check_version(connection)
            finally:
                if self.dialect_name in ("mysql", "mariadb"):
                    connection.execute(sa.text("SELECT RELEASE_LOCK('jobpoller_schema')"))

    def check_schema(self) -> None:
        """Check that the tables exist at the version this library writes.

        Raises:
            ConfigurationError: The tables are missing or at another version.
            DatabaseUnavailableError: The database could not be reached.
        """
        with self.transaction() as connection:
            inspector = sa.inspect(connection)
            missing = [
                t.name
                for t in self.tables.metadata.sorted_tables
                if not inspector.has_table(t.name)
            ]
            if missing:
                raise ConfigurationError(
                    f"the job poller's tables {missing} are missing; start once with "
                    "create_tables on, or create them yourself"
                )
            self._check_version(connection)

    def _check_version(self, connection: Connection) -> None:
        table = self.tables.schema_version
        found = connection.execute(sa.select(table.c.version)).scalars().all()
        if not found:
            connection.execute(sa.insert(table).values(version=SCHEMA_VERSION))
        elif found != [SCHEMA_VERSION]:
            raise ConfigurationError(
                f"the tables with prefix {table.name[: -len('schema_version')]!r} are at "
                f"schema version {found}, this release uses {SCHEMA_VERSION}"
            )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class LockConflictError(DatabaseUnavailableError):
    """A transaction lost a deadlock or waited too long for a lock; it was rolled back.

    Raised to a store method only; `retry_lock_conflicts` runs the method again.
    """


# MySQL/MariaDB error numbers: deadlock found, lock wait timeout exceeded.
_MYSQL_LOCK_ERRORS = {1213, 1205}
# PostgreSQL SQLSTATEs: deadlock detected, serialization failure, lock not available.
_POSTGRESQL_LOCK_STATES = {"40P01", "40001", "55P03"}


def _is_lock_conflict(error: exc.DBAPIError) -> bool:
    original = error.orig
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state in _POSTGRESQL_LOCK_STATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    return len(args) > 0 and args[0] in _MYSQL_LOCK_ERRORS


def retry_lock_conflicts(cls: type[T]) -> type[T]:
    """Make every public method of a store class retry a transaction that lost a lock
    conflict, a few times after a short random pause; past that it raises.

    A transaction that loses is rolled back whole: running the method again is safe (the
    few methods made of several transactions, such as pruning, repeat only idempotent
    work), and is what a deadlock asks for.
    """
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and callable(member):
            setattr(cls, name, _retrying(member))
    return cls


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(_LOCK_CONFLICT_TRIES):
            try:
                return method(*args, **kwargs)
            except LockConflictError:
                if attempt == _LOCK_CONFLICT_TRIES - 1:
                    raise
                logger.debug("a transaction lost a lock conflict; trying again")
                time.sleep(random.uniform(0.5, 1.5) * _LOCK_CONFLICT_PAUSE_SECONDS * 2**attempt)
        raise AssertionError("unreachable")

    return call


# What a server answers when no retry can help: the database or the user does not exist,
# or the password or the client's address is refused. (PostgreSQL through psycopg reports
# these in the message only; MySQL/MariaDB by error number.)
_PERMANENT_POSTGRESQL = re.compile(
    r"FATAL:\s+(?:(?:database|role) \".*\" does not exist|password authentication failed"
    r"|no pg_hba\.conf entry)"
)
_PERMANENT_MYSQL = {1044, 1045, 1049}  # access denied to a database, for a user; unknown db
_PERMANENT_SQLITE = ("unable to open database file",)


def _unavailable(error: exc.DBAPIError, url: sa.URL) -> DatabaseUnavailableError:
    """Describe an outage without the server's address (it may reach HTTP clients); the
    driver's own account goes to `reason`, for the logs, with the password masked."""
    original = error.orig
    reason = " ".join(str(original).split()) or type(original).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    permanent = (
        bool(_PERMANENT_POSTGRESQL.search(reason))
        or (len(args) > 0 and args[0] in _PERMANENT_MYSQL)
        or (url.get_backend_name() == "sqlite" and reason in _PERMANENT_SQLITE)
    )
    return DatabaseUnavailableError(
        f"the database is unavailable ({type(original).__name__}); retry later",
        reason=f"{type(original).__name__}: {reason}",
        permanent=permanent,
    )


def _check_sqlite_file(database: str | None) -> None:
    """Refuse at once what SQLite would refuse at every connection, with the reason."""
    if database in (None, "", ":memory:"):
        raise ConfigurationError(
            "an in-memory SQLite database is private to one connection; "
            "use a file, e.g. sqlite:///./jobpoller.db"
        )
    assert database is not None
    if database.startswith("file:"):
        return  # a URI: SQLite reads its options; any error shows at the first connection
    folder = Path(database).parent
    if not folder.is_dir():
        raise ConfigurationError(
            f"the folder of the SQLite database does not exist: {str(folder)!r}; create it, "
            "or point JOBPOLLER_DATABASE_URL at a file in an existing folder"
        )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("jobpoller_read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _switch_to_wal(cursor: Any) -> None:
    """Turn on WAL; retried, since the switch can fail at once while another connection
    opens the same new file (SQLite does not always call the busy handler for it)."""
    give_up_at = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > give_up_at:
                raise
            time.sleep(_WAL_RETRY_SECONDS)
