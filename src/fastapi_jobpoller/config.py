"""Settings for a `JobPoller`, read from `JOBPOLLER_*` environment variables.

Settings are read when a `JobPollerSettings` object is created, never at import time, so
a test or an app factory can set the environment first.
"""

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["JobPollerSettings"]


class JobPollerSettings(BaseSettings):
    """Every knob of a `JobPoller`; each field is also the env var `JOBPOLLER_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="JOBPOLLER_",
        extra="forbid",
        validate_default=True,
        frozen=True,
        # `JOBPOLLER_HISTORY_MAX_AGE_SECONDS=none` turns that limit off.
        env_parse_none_str="none",
        # An error about an API key or a database URL must not print it into deploy logs.
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default="sqlite:///./jobpoller.db",
        description=(
            "SQLAlchemy URL of the database that stores polls and jobs. SQLite must be a "
            "file (an in-memory database is private to one connection and refused); "
            "`postgresql+psycopg://…` and `mysql+pymysql://…` need the `postgresql` and "
            "`mysql` extras."
        ),
    )
    table_prefix: str = Field(
        default="jobpoller_",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description=(
            "Prefix of the library's table names: a lowercase letter, then up to 30 "
            "lowercase letters, digits or underscores."
        ),
    )
    thread_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Threads that run `def` poll functions, job functions and callbacks.",
    )
    max_stuck_threads: int = Field(
        default=10,
        ge=0,
        le=1000,
        description=(
            "Threads added to replace `def` calls still running past `attempt_timeout` "
            "(Python cannot stop a thread). Up to this many stuck calls do not shrink the "
            "pool; past it, each keeps its thread until it returns. `/health` counts them."
        ),
    )
    process_pool_size: int = Field(
        default=2,
        ge=1,
        le=256,
        description=(
            'Processes for functions registered with `executor="process"`; the pool '
            "starts at first use."
        ),
    )
    async_concurrency: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description=(
            "Most attempts, job runs and callback deliveries in flight at once in one "
            "process; no more is claimed until some finish."
        ),
    )
    claim_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most due polls, or due job ticks, claimed by one query.",
    )
    lease_seconds: float = Field(
        default=30.0,
        ge=1.0,
        le=86_400.0,
        description=(
            "How long a claimed poll or job run stays reserved for the claiming process. "
            "Leases of work in flight are renewed every third of this; the work of a "
            "process that died is taken over once its lease expires."
        ),
    )
    idle_wait_seconds: float = Field(
        default=0.5,
        gt=0.0,
        le=60.0,
        description=(
            "Longest sleep of an idle dispatcher, and so the longest delay before work "
            "submitted by another process is noticed (on PostgreSQL a notification "
            "wakes it sooner)."
        ),
    )
    default_poll_interval: float = Field(
        default=30.0,
        ge=0.001,
        le=86_400.0,
        description="Seconds between attempts of a poll started without `interval`.",
    )
    default_poll_timeout: float | None = Field(
        default=None,
        gt=0.0,
        description="Seconds from a poll's creation to its timeout, if not given; unset: never.",
    )
    default_max_errors: int = Field(
        default=5,
        ge=0,
        le=1_000_000,
        description=(
            "Consecutive errors a poll started without `max_errors` tolerates; one more "
            "ends it `failed`."
        ),
    )
    attempt_timeout: float = Field(
        default=300.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Seconds a single poll attempt, job run or callback may take before it counts "
            "as an error. A `def` function past it keeps its thread until it returns."
        ),
    )
    misfire_grace_time: float = Field(
        default=300.0,
        ge=0.0,
        description=(
            "Seconds a tick may start late before its run is recorded as `missed` instead."
        ),
    )
    coalesce: bool = Field(
        default=True,
        description=(
            "After a delay, one run for all the ticks a job fell behind on, not one per tick."
        ),
    )
    max_instances: int = Field(
        default=1,
        ge=1,
        le=1000,
        description=(
            "Most runs of one job running at once, over all processes; a tick over the "
            "limit is recorded as `skipped`."
        ),
    )
    timezone: str = Field(
        default="UTC",
        description=(
            "Time zone of triggers that name none, and of their naive datetimes: an IANA "
            "name such as `Europe/Paris`."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description=(
            "How long shutdown waits for work in flight before abandoning it and handing "
            "its leases back."
        ),
    )
    create_tables: bool = Field(
        default=True,
        description=(
            "Create missing tables at start. When off, start fails with "
            "`ConfigurationError` if a table is missing or at another schema version."
        ),
    )
    callback_retry_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Seconds before a poll's callbacks are all called again after one of them "
            "raised (delivery is at least once)."
        ),
    )
    callback_max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "Deliveries of a poll's callbacks before giving up on them; the pause between "
            "deliveries doubles from `callback_retry_seconds`, up to an hour."
        ),
    )
    unknown_function_retry_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Least seconds before a poll naming a function that this process does not "
            "register is looked at again. The poll stays stored for a process that "
            "registers it, such as one running a newer deploy."
        ),
    )
    run_engine: bool = Field(
        default=True,
        description=(
            "Run the engine in this process. Off, it is a client: it submits, reads and "
            "serves the API, while `jobpoller worker app:poller` processes (or other apps) "
            "do the work, of functions it may not register itself."
        ),
    )
    heartbeat_seconds: float = Field(
        default=0.5,
        ge=0.1,
        le=60.0,
        description=(
            "Seconds between two heartbeats in the worker registry (an UPDATE and a few "
            "small SELECTs). On PostgreSQL a killed process's work is taken over within "
            "about two of them; elsewhere when its leases expire. Same in every process."
        ),
    )
    recheck_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Seconds between two looks of a process at the rows it set aside (a job whose "
            "stored trigger does not validate, a poll whose arguments are not an object): "
            "a row fixed meanwhile resumes at the next look. The same look reports a job "
            "that is overdue because no running process registers its function."
        ),
    )
    attempt_history: Literal["all", "transitions", "none"] = Field(
        default="transitions",
        description=(
            "Which poll attempts are recorded: `all`, `transitions` (those that raised, "
            "changed the progress or ended the poll) or `none`."
        ),
    )
    history_max_age_seconds: float | None = Field(
        default=7 * 86_400.0,
        gt=0,
        description=(
            "Job runs (counted from their finish) and poll attempts older than this are "
            "deleted; the default is a week. Runs still queued or running are never "
            "deleted."
        ),
    )
    history_max_runs_per_job: int | None = Field(
        default=1000,
        ge=1,
        description="Newest runs kept per job; older ended runs are deleted.",
    )
    history_max_attempts_per_poll: int | None = Field(
        default=1000, ge=1, description="Newest recorded attempts kept per poll."
    )
    finished_poll_max_age_seconds: float | None = Field(
        default=30 * 86_400,  # an int, so the docs show 2592000, not 2.592e+06
        gt=0,
        description=(
            "Ended polls whose callbacks were delivered are deleted this long after they "
            "ended; the default is 30 days. Pending and running polls are never deleted."
        ),
    )
    prune_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Seconds between two pruning passes of a process.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description=(
            "Connections kept open to a PostgreSQL or MariaDB/MySQL server, per process, "
            "once that many were needed at once (up to twice as many more are opened "
            "under load, and closed again when returned)."
        ),
    )
    max_arguments_bytes: int = Field(
        default=65_536,
        ge=64,
        le=16 * 1024 * 1024,
        description=(
            "Largest JSON encoding of a poll's or job's arguments, in bytes; larger ones "
            "raise `PayloadTooLargeError`."
        ),
    )
    api_prefix: str = Field(
        default="/jobpoller",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description=(
            "Path prefix of the management API that `mount_scheduler` adds; "
            "`mount_scheduler(prefix=...)` overrides it."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "Admin key: allows every management route, read and write. Sent in the "
            "`api_key_header` header."
        ),
    )
    read_api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Read-only key: allows the management routes that change nothing.",
    )
    api_key_header: str = Field(
        default="X-API-Key", min_length=1, description="Header that carries an API key."
    )
    auth_disabled: bool = Field(
        default=False,
        description=(
            "Development only: anyone may read and change everything; API keys set beside "
            "it are ignored. Building the management router (`mount_scheduler` or "
            "`get_jobs_router`) logs a warning while it is on."
        ),
    )
    metrics_enabled: bool = Field(
        default=False,
        description=(
            "Serve Prometheus metrics at `GET /metrics` of the management API. Needs the "
            "`metrics` extra."
        ),
    )
    metrics_public: bool = Field(
        default=False,
        description=(
            "Serve the metrics without auth, for a scraper that sends no key; otherwise "
            "they need the read or admin credential."
        ),
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description=(
            "Largest request body the management API accepts, in bytes. A larger one is "
            "refused with 413 `body_too_large` before it is read."
        ),
    )
    max_page_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most items one list request may ask for (`limit`).",
    )
    max_wait_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description=("Longest `timeout` a `GET /polls/{poll_id}/wait` request may ask for."),
    )

    @field_serializer("database_url")
    def _hide_password(self, url: str) -> str:
        return _without_password(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _without_password(value) if name == "database_url" else value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("attempt_history", mode="before")
    @classmethod
    def _none_is_a_choice(cls, value: object) -> object:
        # `env_parse_none_str` turns `JOBPOLLER_ATTEMPT_HISTORY=none` into None before
        # validation; for this setting "none" is one of the choices, not "unset".
        return "none" if value is None else value


def _without_password(url: str) -> str:
    """Return a database URL with its password shown as `***`, to print or log it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: it holds no password to hide
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)
