"""Settings for a `JobPoller`, read from `JOBPOLLER_*` environment variables.

Settings are read when a `JobPollerSettings` object is created, never at import time, so
a test or an app factory can set the environment first.
"""

from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    )

    database_url: str = Field(
        default="sqlite:///./jobpoller.db",
        description="SQLAlchemy URL of the database that stores polls and jobs.",
    )
    table_prefix: str = Field(
        default="jobpoller_",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of the library's table names.",
    )
    thread_pool_size: int = Field(
        default=10, ge=1, le=1000, description="Threads that run synchronous functions."
    )
    process_pool_size: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Processes for functions registered with executor='process'.",
    )
    async_concurrency: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most attempts and job runs in flight at once in this process.",
    )
    claim_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most due rows claimed per query."
    )
    lease_seconds: float = Field(
        default=30.0,
        ge=1.0,
        le=86_400.0,
        description=(
            "How long a claimed poll or job run stays reserved for this process. Leases "
            "of work still in flight are renewed; a crashed process's work is taken "
            "over once its lease expires."
        ),
    )
    idle_wait_seconds: float = Field(
        default=0.5,
        gt=0.0,
        le=60.0,
        description=(
            "Longest sleep of an idle dispatcher; bounds how late work submitted by "
            "another process is seen."
        ),
    )
    default_poll_interval: float = Field(
        default=30.0, ge=0.001, le=86_400.0, description="Seconds between attempts."
    )
    default_poll_timeout: float | None = Field(
        default=None,
        gt=0.0,
        description="Seconds from a poll's start until it times out; unset: never.",
    )
    default_max_errors: int = Field(
        default=5,
        ge=0,
        le=1_000_000,
        description="Consecutive exceptions a poll tolerates before it fails.",
    )
    attempt_timeout: float = Field(
        default=300.0,
        gt=0.0,
        le=86_400.0,
        description="Longest single attempt or job run before it counts as an error.",
    )
    misfire_grace_time: float = Field(
        default=300.0,
        ge=0.0,
        description="Seconds a job tick may start late before it is recorded as missed.",
    )
    coalesce: bool = Field(
        default=True, description="Run a job once, not once per tick, after a delay."
    )
    max_instances: int = Field(
        default=1, ge=1, le=1000, description="Default limit of concurrent runs per job."
    )
    timezone: str = Field(
        default="UTC", description="Default time zone of cron and interval triggers."
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="How long shutdown waits for work in flight before leaving it.",
    )
    create_tables: bool = Field(
        default=True, description="Create the library's tables at start if missing."
    )
    callback_retry_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Seconds before a poll's terminal callbacks run again after one of them "
            "raised (all of that poll's callbacks run again: delivery is at least once)."
        ),
    )
    callback_max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "Deliveries of a poll's callbacks before giving up; the pause between them "
            "doubles from callback_retry_seconds up to an hour."
        ),
    )
    unknown_function_retry_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=86_400.0,
        description=(
            "Least seconds before a poll naming a function this process does not register "
            "is looked at again; it stays stored for a process (e.g. a newer deploy) that "
            "registers it."
        ),
    )
    attempt_history: Literal["all", "transitions", "none"] = Field(
        default="transitions",
        description=(
            "Which poll attempts are recorded in the attempts table: all of them, or "
            "only those that raised, changed the progress or ended the poll."
        ),
    )
    history_max_age_seconds: float | None = Field(
        default=7 * 86_400.0,
        gt=0,
        description="Job runs and poll attempts older than this are pruned; unset: kept.",
    )
    history_max_runs_per_job: int | None = Field(
        default=1000, ge=1, description="Newest runs kept per job; unset: no limit."
    )
    history_max_attempts_per_poll: int | None = Field(
        default=1000, ge=1, description="Newest recorded attempts kept per poll."
    )
    finished_poll_max_age_seconds: float | None = Field(
        default=30 * 86_400,  # an int, so the docs show 2592000, not 2.592e+06
        gt=0,
        description="Ended polls (callbacks delivered) older than this are deleted.",
    )
    prune_interval_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="Seconds between pruning passes."
    )
    database_pool_size: int = Field(
        default=5,
        ge=1,
        le=200,
        description="Connections kept open to a server database, per process.",
    )
    max_arguments_bytes: int = Field(
        default=65_536,
        ge=64,
        le=16 * 1024 * 1024,
        description="Largest JSON encoding of a poll's or job's arguments.",
    )
    api_prefix: str = Field(
        default="/jobpoller",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path prefix of the management API that `mount_scheduler` adds.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Key for every management route (read and write), sent in the API key header.",
    )
    read_api_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Key for the read-only management routes.",
    )
    api_key_header: str = Field(
        default="X-API-Key", min_length=1, description="Header that carries an API key."
    )
    auth_disabled: bool = Field(
        default=False,
        description=(
            "Development only: let anonymous requests read and change everything. "
            "A warning is logged at startup while it is on."
        ),
    )
    metrics_enabled: bool = Field(
        default=False,
        description="Serve Prometheus metrics at <api_prefix>/metrics (needs the metrics extra).",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve the metrics without auth (for a scraper inside your network).",
    )
    max_page_size: int = Field(
        default=500, ge=1, le=10_000, description="Most items one list request returns."
    )
    max_wait_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description="Longest a wait request holds before answering with the poll as it is.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
