"""The pure rules of `_rules/job_rules.py`: what a due tick becomes, and where the job's
schedule goes next."""

from datetime import UTC, datetime, timedelta

import pytest

from fastapi_jobpoller import CronTrigger, DateTrigger, IntervalTrigger, JobRunState
from fastapi_jobpoller._rules.job_rules import (
    MAX_RUN_ATTEMPTS,
    TickPlan,
    gives_up_lost_run,
    job_is_spent,
    plan_tick,
)
from fastapi_jobpoller.models import Trigger

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
EVERY_10_S = IntervalTrigger(seconds=10, start_date=START)


def plan(
    trigger: Trigger = EVERY_10_S,
    *,
    late: float = 0.0,
    behind: int = 0,
    coalesce: bool = False,
    grace: float = 1.0,
    max_instances: int = 1,
    running: int = 0,
) -> TickPlan:
    """Plan the tick due at START + `behind` periods, `late` s after the latest due tick."""
    now = START + timedelta(seconds=10 * behind + late)
    return plan_tick(
        trigger,
        due=START,
        now=now,
        default_zone="UTC",
        coalesce=coalesce,
        misfire_grace_time=grace,
        max_instances=max_instances,
        running=lambda: running,
    )


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("case", "kwargs", "state", "scheduled_at", "next_run_at"),
    [
        ("on time: runs", {}, JobRunState.RUNNING, at(0), at(10)),
        ("late within grace: runs", {"late": 0.9}, JobRunState.RUNNING, at(0), at(10)),
        ("later than grace: missed", {"late": 1.5}, JobRunState.MISSED, at(0), at(10)),
        (
            "instances full: skipped",
            {"running": 1},
            JobRunState.SKIPPED,
            at(0),
            at(10),
        ),
        (
            "room for one more instance: runs",
            {"running": 1, "max_instances": 2},
            JobRunState.RUNNING,
            at(0),
            at(10),
        ),
        (
            "three ticks behind, no coalescing: the first tick, missed, next is the second",
            {"behind": 3},
            JobRunState.MISSED,
            at(0),
            at(10),
        ),
        (
            "three ticks behind, coalescing: the latest tick runs once, next is after now",
            {"behind": 3, "coalesce": True},
            JobRunState.RUNNING,
            at(30),
            at(40),
        ),
        (
            "coalescing and late past grace from the latest tick: missed",
            {"behind": 3, "coalesce": True, "late": 5.0},
            JobRunState.MISSED,
            at(30),
            at(40),
        ),
    ],
)
def test_a_due_tick_becomes(
    case: str,
    kwargs: dict[str, float],
    state: JobRunState,
    scheduled_at: datetime,
    next_run_at: datetime,
) -> None:
    result = plan(**kwargs)  # type: ignore[arg-type]
    assert (result.state, result.scheduled_at, result.next_run_at) == (
        state,
        scheduled_at,
        next_run_at,
    ), case


def test_a_missed_tick_says_why_and_a_run_has_no_error() -> None:
    assert plan(late=5).error == "missed: started later than the job's misfire grace time"
    assert plan(running=1).error == "skipped: the job's max_instances runs were still running"
    assert plan().error is None


def test_running_instances_are_counted_only_for_a_tick_within_grace() -> None:
    asked: list[bool] = []

    def running() -> int:
        asked.append(True)
        return 0

    plan_tick(
        EVERY_10_S,
        due=START,
        now=at(5),
        default_zone="UTC",
        coalesce=False,
        misfire_grace_time=1,
        max_instances=1,
        running=running,
    )
    assert asked == []


def test_a_date_tick_leaves_its_job_no_next_tick() -> None:
    assert plan(DateTrigger(run_date=START)).next_run_at is None


@pytest.mark.parametrize(
    ("next_run_at", "running", "spent"),
    [(None, 0, True), (None, 1, False), (START, 0, False), (START, 2, False)],
)
def test_a_job_is_spent_with_no_tick_left_and_no_run_running(
    next_run_at: datetime | None, running: int, spent: bool
) -> None:
    assert job_is_spent(next_run_at, running) is spent


def test_a_trigger_past_its_end_has_no_next_tick() -> None:
    ending = IntervalTrigger(seconds=10, start_date=START, end_date=at(5))
    assert plan(ending).next_run_at is None


def test_a_cron_tick_moves_to_the_next_calendar_time() -> None:
    hourly = CronTrigger(minute=0, timezone="UTC")
    result = plan(hourly)
    assert (result.state, result.next_run_at) == (JobRunState.RUNNING, at(3600))


@pytest.mark.parametrize(("attempt", "gives_up"), [(1, False), (2, False), (3, True), (4, True)])
def test_a_lost_run_is_retried_up_to_the_bound(attempt: int, gives_up: bool) -> None:
    assert MAX_RUN_ATTEMPTS == 3
    assert gives_up_lost_run(attempt) is gives_up
