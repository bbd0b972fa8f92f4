"""What a due tick of a scheduled job becomes: a run, a missed tick or a skipped one.

Called by the claim (`RunStore.claim_ticks`) inside the transaction that holds the job's
row, so that the decision and its record are one. Pure: the clock, the job's settings and
the number of its runs in flight are all parameters.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .._apscheduler import latest_due_tick, next_fire_time
from ..models import JobRunState
from ..triggers import Trigger

__all__ = ["MAX_RUN_ATTEMPTS", "TickPlan", "gives_up_lost_run", "job_is_spent", "plan_tick"]

MAX_RUN_ATTEMPTS = 3
"""Runs of one tick at most: a run whose worker vanished is run again, but not forever,
since a job that kills its process every time would take down every process in turn."""

_NOT_RUN_REASONS = {
    JobRunState.MISSED: "missed: started later than the job's misfire grace time",
    JobRunState.SKIPPED: "skipped: the job's max_instances runs were still running",
}


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What to record for one due tick, and where the job's schedule goes next."""

    scheduled_at: datetime
    """The tick the run is for (the latest one due, when the job coalesces)."""
    state: JobRunState
    """`RUNNING` (to be executed now), `MISSED` or `SKIPPED`."""
    next_run_at: datetime | None
    """The job's following tick; None when its trigger fires no more."""

    @property
    def error(self) -> str | None:
        """Return why the tick was not run, if it was not."""
        return _NOT_RUN_REASONS.get(self.state)


def plan_tick(
    trigger: Trigger,
    *,
    due: datetime,
    now: datetime,
    default_zone: str,
    coalesce: bool,
    misfire_grace_time: float,
    max_instances: int,
    running: Callable[[], int],
) -> TickPlan:
    """Decide what the job's tick due at `due` becomes at `now`.

    A coalescing job runs its latest due tick once instead of every tick it is behind.
    A tick later than `misfire_grace_time` is missed; one that finds `max_instances` runs
    of the job in flight (`running()`, asked only then) is skipped; else it runs.
    """
    scheduled_at = due
    if coalesce:
        scheduled_at = latest_due_tick(trigger, default_zone=default_zone, scheduled=due, now=now)
    following = next_fire_time(
        trigger, default_zone=default_zone, previous=scheduled_at, now=now, coalesce=coalesce
    )
    if (now - scheduled_at).total_seconds() > misfire_grace_time:
        state = JobRunState.MISSED
    elif running() >= max_instances:
        state = JobRunState.SKIPPED
    else:
        state = JobRunState.RUNNING
    return TickPlan(scheduled_at=scheduled_at, state=state, next_run_at=following)


def job_is_spent(next_run_at: datetime | None, running: int) -> bool:
    """Return whether a job is done for good: no tick left, and no run of it running.

    A spent job is deleted (its runs stay in the history); one with a run still running
    is deleted when that run ends.
    """
    return next_run_at is None and running == 0


def gives_up_lost_run(attempt: int) -> bool:
    """Return whether a run whose worker was lost after `attempt` tries is given up."""
    return attempt >= MAX_RUN_ATTEMPTS
