"""Public data models: what the poller returns and what it accepts as options."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
)

from .triggers import CronTrigger, DateTrigger, IntervalTrigger, Trigger

__all__ = [
    "CronTrigger",
    "Health",
    "DateTrigger",
    "IntervalTrigger",
    "JobInfo",
    "JobRunInfo",
    "JobRunState",
    "PollAttemptInfo",
    "PollInfo",
    "PollOptions",
    "PollState",
    "QuarantinedRow",
    "WorkerInfo",
    "Trigger",
]


class PollState(StrEnum):
    """Where a poll is in its life; the last four are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Return whether no more attempts will run."""
        return self not in (PollState.PENDING, PollState.RUNNING)


class PollOptions(BaseModel):
    """How a poll is paced and when it gives up; `None` means the setting's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float | None = Field(
        default=None, ge=0.001, le=86_400, description="Seconds between attempts."
    )
    backoff_factor: float = Field(
        default=1.0, ge=1.0, le=100.0, description="Interval multiplier per attempt."
    )
    max_interval: float | None = Field(
        default=None, ge=0.001, le=86_400, description="Cap of the backed-off interval."
    )
    jitter: float = Field(
        default=0.0, ge=0, le=3600, description="Up to this many seconds added at random."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=366 * 86_400,
        description="Seconds from the stored start until the poll times out.",
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Attempts before the poll fails."
    )
    max_errors: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Consecutive exceptions tolerated before the poll fails.",
    )
    delay: float = Field(
        default=0.0, ge=0, le=86_400, description="Seconds before the first attempt."
    )
    callbacks: tuple[str, ...] = Field(
        default=(), max_length=20, description="Registered callbacks run when it ends."
    )


class PollInfo(BaseModel):
    """A stored poll as it is now."""

    model_config = ConfigDict(frozen=True)

    id: str
    function: str
    arguments: dict[str, Any]
    state: PollState
    attempts: int
    consecutive_errors: int
    interval: float
    backoff_factor: float
    max_interval: float | None
    jitter: float
    timeout: float | None
    max_attempts: int | None
    max_errors: int
    callbacks: list[str]
    created_at: datetime
    deadline: datetime | None
    next_poll_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    progress: Any = None
    result: Any = None
    error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    callbacks_pending: bool = False
    callback_attempts: int = 0
    problem: str | None = Field(
        default=None,
        description=(
            "Why the engine set this row aside (polls and jobs), or why a stored value "
            "could not be read (then shown empty); None for a row in order."
        ),
    )

    @property
    def is_terminal(self) -> bool:
        """Return whether the poll has ended."""
        return self.state.is_terminal


class JobInfo(BaseModel):
    """A stored scheduled job as it is now."""

    model_config = ConfigDict(frozen=True)

    id: str
    function: str
    arguments: dict[str, Any]
    trigger: Trigger | None = Field(description="None only when the stored one cannot be read.")
    next_run_at: datetime | None
    paused: bool
    misfire_grace_time: float
    coalesce: bool
    max_instances: int
    created_at: datetime
    updated_at: datetime
    problem: str | None = Field(
        default=None,
        description=(
            "Why the engine set this row aside, or why a stored value could not be read "
            "(then shown empty); None for a row in order."
        ),
    )


class PollAttemptInfo(BaseModel):
    """One recorded attempt of a poll (which ones are recorded: `attempt_history`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    poll_id: str
    function: str
    attempt: int
    worker: str | None
    started_at: datetime
    finished_at: datetime
    outcome: str = Field(description="pending, error, succeeded, failed or timed_out.")
    progress: Any = None
    error: str | None = None
    traceback: str | None = None


class JobRunState(StrEnum):
    """The outcome of one tick of a scheduled job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSED = "missed"
    SKIPPED = "skipped"


class JobRunInfo(BaseModel):
    """One tick of a scheduled job: when it was due, when it ran, how it ended."""

    model_config = ConfigDict(frozen=True)

    id: str
    job_id: str
    function: str
    arguments: dict[str, Any]
    scheduled_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    state: JobRunState
    attempt: int
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    problem: str | None = Field(
        default=None,
        description=(
            "Why the engine set this row aside, or why a stored value could not be read "
            "(then shown empty); None for a row in order."
        ),
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration(self) -> float | None:
        """Return the seconds from the run's start to its end, once it has ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class QuarantinedRow(BaseModel):
    """A poll or job the engine set aside because it cannot use the stored row."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["poll", "job"]
    id: str = Field(description="The poll's or job's id.")
    reason: str = Field(description="What is wrong with the stored row.")
    found_at: datetime
    worker: str | None = Field(default=None, description="The process that set it aside.")


class WorkerInfo(BaseModel):
    """One process in the worker registry: what it is, what it registers, how it does."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The process's worker id (`host:pid:random`), as in leases.")
    host: str
    pid: int
    role: Literal["engine", "worker", "client"] = Field(
        description=(
            "`engine`: an app that runs the engine; `worker`: the engine alone; `client`: "
            "submits and reads, runs nothing."
        )
    )
    version: str = Field(description="The fastapi-jobpoller version it runs.")
    started_at: datetime
    heartbeat_at: datetime
    alive: bool = Field(
        description=(
            "Its last heartbeat is younger than `lease_seconds`. (On PostgreSQL a process "
            "that died is forgotten within a heartbeat of the others.)"
        )
    )
    functions: dict[str, list[str]] = Field(
        description="The names it registers, by kind: `poll`, `job`, `callback`."
    )
    in_flight: int = Field(description="Attempts and job runs it was executing at its heartbeat.")
    threads_stuck: int = Field(description="Its `def` calls stuck past `attempt_timeout`.")


class Health(BaseModel):
    """Whether this process's engine runs, reaches its database and keeps up."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description=(
            "`ok`; `degraded`: working, but see `problems`; `unavailable`: this process "
            "cannot make progress (HTTP 503)."
        )
    )
    engine_alive: bool = Field(description="The dispatch loop runs and cycled recently.")
    database_ok: bool = Field(description="A query to the database just succeeded.")
    worker_id: str = Field(description="This process's name in lease columns.")
    in_flight: int = Field(description="Attempts and job runs this process is executing.")
    role: Literal["engine", "worker", "client"] = Field(
        default="engine",
        description=(
            "`engine`: an app that runs the engine; `worker`: the engine alone; `client`: "
            "`run_engine` is off. Engines claim work alike: there is no leader."
        ),
    )
    workers: int | None = Field(
        default=None,
        description=(
            "Processes alive in the worker registry (all roles, this one included); None "
            "when the database did not answer."
        ),
    )
    last_cycle_at: datetime | None = Field(
        default=None, description="When a dispatch cycle of this process last succeeded."
    )
    failed_cycles: int = Field(
        default=0, description="Dispatch cycles failed in a row since then (each retried)."
    )
    threads_busy: int = Field(default=0, description="Threads running `def` calls now.")
    threads_stuck: int = Field(
        default=0, description="`def` calls still running past `attempt_timeout`."
    )
    threads_waiting: int = Field(default=0, description="`def` calls waiting for a thread.")
    quarantined: int = Field(
        default=0, description="Polls and jobs set aside (all processes; see /quarantine)."
    )
    unclaimed_jobs: int = Field(
        default=0, description="Overdue jobs whose function no running process registers."
    )
    unclaimed_polls: int = Field(
        default=0, description="Overdue polls whose function no running process registers."
    )
    problems: list[str] = Field(
        default_factory=list, description="Why the status is not `ok`, one sentence each."
    )
