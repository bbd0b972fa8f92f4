"""Scheduled jobs end to end: a real `JobPoller` on every database, real ticks and runs."""

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastapi_jobpoller import (
    CronTrigger,
    DateTrigger,
    FunctionNotFoundError,
    IntervalTrigger,
    InvalidArgumentsError,
    JobConflictError,
    JobNotFoundError,
    JobPoller,
    JobRunInfo,
    JobRunState,
)
from tests.conftest import PollerFactory
from tests.helpers import QUIET, RunsCheck, wait_for_runs

pytestmark = pytest.mark.anyio

PERIOD = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


def in_state(state: JobRunState, count: int) -> RunsCheck:
    return lambda runs: sum(r.state is state for r in runs) >= count


def settled(count: int) -> RunsCheck:
    """At least `count` runs, none of them still queued or running."""
    unsettled = (JobRunState.QUEUED, JobRunState.RUNNING)
    return lambda runs: len(runs) >= count and all(r.state not in unsettled for r in runs)


async def pause_and_settle(poller: JobPoller, job_id: str) -> list[JobRunInfo]:
    """Pause a job, then return all its runs once none is still queued or running."""
    await poller.pause_job(job_id)
    # No tick is claimed after the pause commits, so this count is final.
    count = len(await poller.list_job_runs(job_id=job_id, limit=1000))
    return await wait_for_runs(poller, job_id, settled(count))


def is_multiple_of(delta: timedelta, period: float) -> bool:
    """Whether `delta` is a whole number (≥1) of periods, to within a few microseconds."""
    periods = delta.total_seconds() / period
    return round(periods) >= 1 and abs(delta.total_seconds() - round(periods) * period) < 1e-5


# -- firing --------------------------------------------------------------------------


async def test_an_interval_job_runs_repeatedly_with_its_arguments_and_records_each_run(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls: list[tuple[str, int]] = []

    @poller.job_function()
    async def greet(name: str, times: int = 1) -> dict[str, object]:
        calls.append((name, times))
        return {"greeting": f"hello {name}", "times": times}

    async with poller:
        job = await poller.add_job(
            "greet", IntervalTrigger(seconds=PERIOD), arguments={"name": "ada", "times": 2}
        )
        runs = await wait_for_runs(poller, job.id, in_state(JobRunState.SUCCEEDED, 3))

    assert len(calls) >= 3
    assert set(calls) == {("ada", 2)}
    succeeded = [r for r in runs if r.state is JobRunState.SUCCEEDED]
    for run in succeeded:
        assert run.job_id == job.id
        assert run.function == "greet"
        assert run.arguments == {"name": "ada", "times": 2}
        assert run.result == {"greeting": "hello ada", "times": 2}
        assert run.error is None
        assert run.worker == poller.worker_id
        assert run.attempt == 1
        assert run.started_at is not None and run.finished_at is not None
        assert run.scheduled_at <= run.started_at <= run.finished_at
    # Every tick lies on the trigger's grid: the pinned start date plus whole periods.
    assert isinstance(job.trigger, IntervalTrigger) and job.trigger.start_date is not None
    assert job.next_run_at == job.trigger.start_date
    for run in succeeded:
        assert run.scheduled_at == job.trigger.start_date or is_multiple_of(
            run.scheduled_at - job.trigger.start_date, PERIOD
        )
    assert len({r.scheduled_at for r in runs}) == len(runs)


async def test_a_cron_job_fires_on_whole_seconds(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def beat() -> str:
        return "beat"

    async with poller:
        job = await poller.add_job("beat", CronTrigger(second="*"))
        assert job.next_run_at is not None and job.next_run_at.microsecond == 0
        run = (await wait_for_runs(poller, job.id, settled(1)))[0]
        after = await poller.get_job(job.id)

    assert run.state is JobRunState.SUCCEEDED
    assert run.result == "beat"
    assert run.scheduled_at == job.next_run_at
    # The following tick is again on a whole second, after the one that ran.
    assert after.next_run_at is not None and after.next_run_at.microsecond == 0
    assert after.next_run_at >= run.scheduled_at + timedelta(seconds=1)


async def test_a_date_job_runs_once_and_then_leaves_the_job_list(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls: list[str] = []

    @poller.job_function()
    def once(tag: str) -> str:
        calls.append(tag)
        return tag.upper()

    async with poller:
        job = await poller.add_job("once", DateTrigger(), arguments={"tag": "x"}, job_id="one")
        [run] = await wait_for_runs(poller, "one", settled(1))
        await asyncio.sleep(QUIET)

        assert await poller.list_jobs() == []
        with pytest.raises(JobNotFoundError):
            await poller.get_job("one")
        assert await poller.list_job_runs(job_id="one") == [run]

    assert calls == ["x"]
    assert run.state is JobRunState.SUCCEEDED
    assert run.result == "X"
    assert isinstance(job.trigger, DateTrigger)
    assert run.scheduled_at == job.trigger.run_date


async def test_a_date_job_past_its_misfire_grace_time_is_recorded_missed_and_not_run(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls: list[int] = []

    @poller.job_function()
    def late() -> None:
        calls.append(1)

    # No process runs while the job is due, nor for longer than its grace time after.
    run_date = utcnow() + timedelta(seconds=1.5)
    adder = make_poller()
    adder.job_function()(late)
    async with adder:
        await adder.add_job(
            "late", DateTrigger(run_date=run_date), job_id="late", misfire_grace_time=0.5
        )
    await asyncio.sleep(max((run_date - utcnow()).total_seconds(), 0) + 1.0)
    async with poller:
        [run] = await wait_for_runs(poller, "late", settled(1))

        assert await poller.list_jobs() == []

    assert calls == []
    assert run.state is JobRunState.MISSED
    assert run.scheduled_at == run_date
    assert run.started_at is None
    assert run.error is not None and "misfire grace time" in run.error


async def test_sync_and_async_job_functions_both_run(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    def sync_job() -> int:
        return threading.get_ident()

    @poller.job_function()
    async def async_job() -> int:
        await asyncio.sleep(0)
        return threading.get_ident()

    async with poller:
        await poller.add_job("sync_job", DateTrigger(), job_id="sync")
        await poller.add_job("async_job", DateTrigger(), job_id="async")
        [sync_run] = await wait_for_runs(poller, "sync", settled(1))
        [async_run] = await wait_for_runs(poller, "async", settled(1))

    loop_thread = threading.get_ident()
    assert sync_run.state is JobRunState.SUCCEEDED
    assert async_run.state is JobRunState.SUCCEEDED
    # A `def` job runs on a worker thread, an `async def` job on the host's event loop.
    assert sync_run.result != loop_thread
    assert async_run.result == loop_thread


# -- managing jobs -------------------------------------------------------------------


async def test_a_paused_job_gets_no_ticks_until_it_is_resumed(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def work() -> None:
        return None

    async with poller:
        job = await poller.add_job("work", IntervalTrigger(seconds=PERIOD), job_id="work")
        await wait_for_runs(poller, job.id, in_state(JobRunState.SUCCEEDED, 1))

        paused = await poller.pause_job(job.id)
        assert paused.paused is True
        assert paused.next_run_at is None
        before = await wait_for_runs(poller, job.id, settled(1))
        await asyncio.sleep(QUIET)
        assert await poller.list_job_runs(job_id=job.id, limit=1000) == list(reversed(before))

        resumed_at = utcnow()
        resumed = await poller.resume_job(job.id)
        assert resumed.paused is False
        assert resumed.next_run_at is not None and resumed.next_run_at >= resumed_at
        after = await wait_for_runs(
            poller, job.id, in_state(JobRunState.SUCCEEDED, len(before) + 2)
        )

    assert all(r.scheduled_at >= resumed_at for r in after[len(before) :])


async def test_a_job_added_paused_has_no_ticks_until_it_is_resumed(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def work() -> None:
        return None

    async with poller:
        job = await poller.add_job("work", IntervalTrigger(seconds=PERIOD), paused=True)
        assert job.paused is True and job.next_run_at is None
        await asyncio.sleep(QUIET)
        assert await poller.list_job_runs(job_id=job.id) == []

        await poller.resume_job(job.id)
        await wait_for_runs(poller, job.id, in_state(JobRunState.SUCCEEDED, 1))


async def test_rescheduling_a_job_changes_its_period(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def work() -> None:
        return None

    async with poller:
        job = await poller.add_job("work", IntervalTrigger(hours=1), job_id="work")
        assert job.next_run_at is not None
        assert job.next_run_at - job.created_at == timedelta(hours=1)

        fast = await poller.reschedule_job("work", IntervalTrigger(seconds=PERIOD))
        assert isinstance(fast.trigger, IntervalTrigger) and fast.trigger.seconds == PERIOD
        assert fast.next_run_at is not None and fast.next_run_at < job.next_run_at
        runs = await wait_for_runs(poller, "work", in_state(JobRunState.SUCCEEDED, 3))
        ticks = [r.scheduled_at for r in runs]
        assert all(is_multiple_of(b - a, PERIOD) for a, b in zip(ticks, ticks[1:], strict=False))

        slow = await poller.reschedule_job("work", {"type": "interval", "hours": 2})
        assert slow.next_run_at is not None
        assert slow.next_run_at - slow.updated_at == timedelta(hours=2)
        settled_runs = await wait_for_runs(poller, "work", settled(3))
        await asyncio.sleep(QUIET)
        assert len(await poller.list_job_runs(job_id="work", limit=1000)) == len(settled_runs)


async def test_a_rescheduled_paused_job_stays_paused(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def work() -> None:
        return None

    async with poller:
        await poller.add_job("work", IntervalTrigger(hours=1), job_id="work", paused=True)
        job = await poller.reschedule_job("work", IntervalTrigger(seconds=PERIOD))
        assert job.paused is True and job.next_run_at is None
        await asyncio.sleep(QUIET)
        assert await poller.list_job_runs(job_id="work") == []


async def test_a_removed_job_stops_running_and_cannot_be_found(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    async def work() -> None:
        return None

    async with poller:
        job = await poller.add_job("work", IntervalTrigger(seconds=PERIOD), job_id="work")
        await wait_for_runs(poller, job.id, in_state(JobRunState.SUCCEEDED, 1))

        await poller.remove_job("work")
        with pytest.raises(JobNotFoundError):
            await poller.get_job("work")
        assert await poller.list_jobs() == []
        history = await wait_for_runs(poller, "work", settled(1))
        await asyncio.sleep(QUIET)
        # The history stays, and no tick is added to it.
        assert len(await poller.list_job_runs(job_id="work", limit=1000)) == len(history)
        with pytest.raises(JobNotFoundError):
            await poller.remove_job("work")


async def test_run_job_now_runs_an_extra_run_at_once_and_keeps_the_next_tick(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def report(day: str) -> str:
        return f"report for {day}"

    async with poller:
        job = await poller.add_job(
            "report", IntervalTrigger(hours=1), arguments={"day": "monday"}, job_id="report"
        )
        queued = await poller.run_job_now("report")
        assert queued.state is JobRunState.QUEUED
        assert queued.job_id == "report" and queued.arguments == {"day": "monday"}
        [run] = await wait_for_runs(poller, "report", settled(1))

        assert run.id == queued.id
        assert await poller.get_job_run(queued.id) == run
        after = await poller.get_job("report")
        with pytest.raises(JobNotFoundError):
            await poller.run_job_now("no-such-job")
        with pytest.raises(JobNotFoundError):
            await poller.get_job_run("no-such-run")

    assert run.state is JobRunState.SUCCEEDED
    assert run.result == "report for monday"
    assert run.worker == poller.worker_id
    assert after.next_run_at == job.next_run_at


async def test_adding_a_job_under_a_taken_id_conflicts_unless_replace_existing(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def greet(name: str) -> str:
        return name

    async with poller:
        first = await poller.add_job(
            "greet", IntervalTrigger(hours=1), arguments={"name": "a"}, job_id="nightly"
        )
        with pytest.raises(JobConflictError):
            await poller.add_job(
                "greet", IntervalTrigger(hours=3), arguments={"name": "b"}, job_id="nightly"
            )
        assert await poller.get_job("nightly") == first

        replaced = await poller.add_job(
            "greet",
            CronTrigger(hour=4),
            arguments={"name": "b"},
            job_id="nightly",
            replace_existing=True,
            max_instances=3,
        )
        assert await poller.list_jobs() == [replaced]

    assert replaced.arguments == {"name": "b"}
    assert replaced.trigger == CronTrigger(hour=4)
    assert replaced.max_instances == 3
    assert replaced.next_run_at is not None and replaced.next_run_at.hour == 4
    assert replaced.created_at == first.created_at


async def test_adding_a_job_of_an_unregistered_function_raises_function_not_found(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    async def a_poll_function() -> None:
        return None

    async with poller:
        with pytest.raises(FunctionNotFoundError):
            await poller.add_job("missing", IntervalTrigger(hours=1))
        # A poll function is not a job function.
        with pytest.raises(FunctionNotFoundError):
            await poller.add_job("a_poll_function", IntervalTrigger(hours=1))
        assert await poller.list_jobs() == []


async def test_adding_a_job_with_arguments_or_limits_that_do_not_fit_raises_invalid_arguments(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    async def count_up(count: int, label: object = None) -> None:
        return None

    bad_arguments: dict[str, dict[str, object]] = {
        "missing": {},
        "wrong type": {"count": "many"},
        "unknown name": {"count": 1, "extra": True},
        "not JSON": {"count": 1, "label": object()},
    }
    bad_limits: dict[str, dict[str, Any]] = {
        "negative grace": {"misfire_grace_time": -1},
        "no instances": {"max_instances": 0},
    }
    async with poller:
        for case, arguments in bad_arguments.items():
            with pytest.raises(InvalidArgumentsError):
                await poller.add_job("count_up", IntervalTrigger(hours=1), arguments=arguments)
                pytest.fail(f"{case} arguments were accepted")
        for case, limits in bad_limits.items():
            with pytest.raises(InvalidArgumentsError):
                await poller.add_job(
                    "count_up", IntervalTrigger(hours=1), arguments={"count": 1}, **limits
                )
                pytest.fail(f"{case} was accepted")
        assert await poller.list_jobs() == []


# -- how runs end --------------------------------------------------------------------


async def test_a_job_slower_than_its_interval_never_overlaps_and_its_extra_ticks_are_skipped(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    running = 0
    most_at_once = 0

    @poller.job_function()
    async def slow() -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        try:
            await asyncio.sleep(PERIOD * 5)
        finally:
            running -= 1

    def enough(runs: list[JobRunInfo]) -> bool:
        return in_state(JobRunState.SUCCEEDED, 2)(runs) and in_state(JobRunState.SKIPPED, 3)(runs)

    async with poller:
        job = await poller.add_job("slow", IntervalTrigger(seconds=PERIOD), max_instances=1)
        await wait_for_runs(poller, job.id, enough)
        runs = await pause_and_settle(poller, job.id)

    assert most_at_once == 1
    for run in runs:
        if run.state is JobRunState.SKIPPED:
            assert run.started_at is None
            assert run.error is not None and "max_instances" in run.error
        else:
            assert run.state is JobRunState.SUCCEEDED


async def test_a_job_may_overlap_itself_up_to_max_instances(make_poller: PollerFactory) -> None:
    poller = make_poller()
    running = 0
    most_at_once = 0

    @poller.job_function()
    async def slow() -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        try:
            await asyncio.sleep(PERIOD * 5)
        finally:
            running -= 1

    async with poller:
        job = await poller.add_job(
            "slow", IntervalTrigger(seconds=PERIOD), max_instances=2, coalesce=True
        )
        await wait_for_runs(poller, job.id, in_state(JobRunState.SKIPPED, 2))
        await pause_and_settle(poller, job.id)

    assert most_at_once == 2


async def test_a_job_that_raises_records_a_failed_run_and_keeps_its_schedule(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.job_function()
    def explode(message: str) -> None:
        raise ValueError(message)

    async with poller:
        job = await poller.add_job(
            "explode", IntervalTrigger(seconds=PERIOD), arguments={"message": "boom"}
        )
        runs = await wait_for_runs(poller, job.id, in_state(JobRunState.FAILED, 2))
        still = await poller.get_job(job.id)

    failed = [r for r in runs if r.state is JobRunState.FAILED]
    assert all(r.error == "ValueError: boom" for r in failed)
    assert all(r.result is None and r.finished_at is not None for r in failed)
    assert still.next_run_at is not None and still.next_run_at > failed[0].scheduled_at
    assert still.paused is False


async def test_a_result_that_is_not_json_is_stored_as_its_repr(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.job_function()
    def make_set() -> set[int]:
        return {1}

    async with poller:
        await poller.add_job("make_set", DateTrigger(), job_id="set")
        [run] = await wait_for_runs(poller, "set", settled(1))

    assert run.state is JobRunState.SUCCEEDED
    assert run.result == "{1}"


# -- restarts and downtime -----------------------------------------------------------


async def test_jobs_added_by_one_poller_fire_in_a_new_poller_on_the_same_database(
    make_poller: PollerFactory,
) -> None:
    def register(poller: JobPoller) -> None:
        @poller.job_function()
        async def ping(target: str) -> str:
            return target

    first = make_poller()
    register(first)
    async with first:
        job = await first.add_job(
            "ping",
            IntervalTrigger(seconds=PERIOD),
            arguments={"target": "db"},
            job_id="ping",
            # Room to overlap, so no tick is skipped while a run's end is being written.
            max_instances=100,
        )
        await wait_for_runs(first, "ping", in_state(JobRunState.SUCCEEDED, 1))

    second = make_poller()
    register(second)
    started_at = utcnow()
    async with second:
        stored = await second.get_job("ping")
        assert (stored.function, stored.arguments, stored.trigger) == (
            job.function,
            job.arguments,
            job.trigger,
        )
        await wait_for_runs(
            second,
            "ping",
            lambda runs: (
                sum(r.worker == second.worker_id and r.state is JobRunState.SUCCEEDED for r in runs)
                >= 2
            ),
        )
        runs = await pause_and_settle(second, "ping")

    by_second = [r for r in runs if r.worker == second.worker_id]
    assert all(r.state is JobRunState.SUCCEEDED and r.result == "db" for r in by_second)
    assert {r.worker for r in runs} == {first.worker_id, second.worker_id}
    # Coalesced: at most the one tick that was due at the restart is from before it.
    assert sum(r.scheduled_at < started_at for r in by_second) <= 1


def register_counter(poller: JobPoller) -> None:
    @poller.job_function()
    async def counter() -> None:
        return None


async def add_then_stop(make_poller: PollerFactory, **job_options: Any) -> tuple[str, datetime]:
    """Add a 0.1 s interval job whose first tick comes after this poller has stopped (3 s
    leave room for a start and a stop on a busy machine).

    Returns the job's id and its first tick. Callers pass a high `max_instances`, so
    no tick is skipped while the previous run's end is still being written.
    """
    poller = make_poller()
    register_counter(poller)
    async with poller:
        start = utcnow() + timedelta(seconds=3.0)
        job = await poller.add_job(
            "counter", IntervalTrigger(seconds=0.1, start_date=start), **job_options
        )
        assert job.next_run_at == start
    if utcnow() >= start:
        pytest.fail("the first poller took too long to stop; the test cannot tell downtime apart")
    return job.id, start


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max((moment - utcnow()).total_seconds(), 0))


async def test_after_downtime_a_coalescing_job_runs_once_for_all_its_missed_ticks(
    make_poller: PollerFactory,
) -> None:
    job_id, first_tick = await add_then_stop(make_poller, coalesce=True, max_instances=100)
    await sleep_until(first_tick + timedelta(seconds=0.45))

    poller = make_poller()
    register_counter(poller)
    restarted_at = utcnow()
    async with poller:
        await wait_for_runs(poller, job_id, in_state(JobRunState.SUCCEEDED, 2))
        runs = await pause_and_settle(poller, job_id)

    # One run stands for all the ticks missed while down: like APScheduler's, it is the
    # latest tick due when the new poller looked, so no earlier tick has a run.
    catch_up = min(runs, key=lambda r: r.scheduled_at)
    assert first_tick + timedelta(seconds=0.4) <= catch_up.scheduled_at
    assert catch_up.started_at is not None and catch_up.started_at >= restarted_at
    assert all(r.state is JobRunState.SUCCEEDED for r in runs)
    assert all(is_multiple_of(r.scheduled_at - first_tick, 0.1) for r in runs)


async def test_a_coalescing_job_down_longer_than_its_grace_time_still_catches_up_once(
    make_poller: PollerFactory,
) -> None:
    job_id, first_tick = await add_then_stop(
        make_poller, coalesce=True, max_instances=100, misfire_grace_time=0.2
    )
    await sleep_until(first_tick + timedelta(seconds=0.45))

    poller = make_poller()
    register_counter(poller)
    restarted_at = utcnow()
    async with poller:
        await wait_for_runs(poller, job_id, in_state(JobRunState.SUCCEEDED, 1))
        runs = await pause_and_settle(poller, job_id)

    # The first tick is 0.45 s old, past the 0.2 s grace, but the catch-up run counts
    # from the latest missed tick and so still runs.
    catch_up = min(runs, key=lambda r: r.scheduled_at)
    assert catch_up.state is JobRunState.SUCCEEDED
    assert catch_up.started_at is not None and catch_up.started_at >= restarted_at
    assert not [r for r in runs if r.state is JobRunState.MISSED]


async def test_after_downtime_a_job_without_coalesce_runs_every_missed_tick(
    make_poller: PollerFactory,
) -> None:
    job_id, first_tick = await add_then_stop(make_poller, coalesce=False, max_instances=100)
    await sleep_until(first_tick + timedelta(seconds=0.45))

    poller = make_poller()
    register_counter(poller)
    restarted_at = utcnow()
    missed = int((restarted_at - first_tick).total_seconds() / 0.1) + 1
    async with poller:
        await wait_for_runs(poller, job_id, in_state(JobRunState.SUCCEEDED, missed + 1))
        runs = await pause_and_settle(poller, job_id)

    in_downtime = [r for r in runs if r.scheduled_at < restarted_at]
    assert len(in_downtime) == missed >= 5
    assert all(r.state is JobRunState.SUCCEEDED for r in in_downtime)
    for index, run in enumerate(in_downtime):
        offset = (run.scheduled_at - first_tick).total_seconds()
        assert abs(offset - index * 0.1) < 1e-4


async def test_after_downtime_ticks_older_than_the_misfire_grace_time_are_recorded_missed(
    make_poller: PollerFactory,
) -> None:
    grace = 0.25
    job_id, first_tick = await add_then_stop(
        make_poller, coalesce=False, max_instances=100, misfire_grace_time=grace
    )
    await sleep_until(first_tick + timedelta(seconds=0.45))

    poller = make_poller()
    register_counter(poller)
    async with poller:
        runs = await wait_for_runs(
            poller,
            job_id,
            lambda runs: (
                in_state(JobRunState.MISSED, 1)(runs) and in_state(JobRunState.SUCCEEDED, 1)(runs)
            ),
        )

    assert runs[0].scheduled_at == first_tick
    assert runs[0].state is JobRunState.MISSED
    for run in runs:
        if run.state is JobRunState.MISSED:
            assert run.started_at is None and run.finished_at is not None
            assert (run.finished_at - run.scheduled_at).total_seconds() > grace
        elif run.started_at is not None:
            assert (run.started_at - run.scheduled_at).total_seconds() <= grace


async def test_a_process_without_a_jobs_function_leaves_its_ticks_to_one_that_has_it(
    make_poller: PollerFactory,
) -> None:
    """During a deploy, or in an admin script, a process that lacks the function neither
    runs nor fails the job's ticks: they wait, and the process reports the job once it is
    clearly overdue; a process that registers the function then runs them."""
    job_id, first_tick = await add_then_stop(
        make_poller, max_instances=100, misfire_grace_time=60, coalesce=False
    )

    stranger = make_poller()

    @stranger.job_function()
    async def something_else() -> None:
        return None

    async with stranger:
        await sleep_until(first_tick + timedelta(seconds=0.5))  # five ticks due meanwhile
        await asyncio.sleep(QUIET)
        assert await stranger.list_job_runs(job_id=job_id) == []
        job = await stranger.get_job(job_id)
        assert (job.function, job.next_run_at) == ("counter", first_tick)
        assert stranger._dispatcher is not None
        # Seen a few minutes later, the job is one that no running process can run.
        later = utcnow() + timedelta(minutes=3)
        report = await asyncio.to_thread(stranger._dispatcher.upkeep.look, later)
        assert report.unclaimed_jobs == {job_id: "counter"}

    # A process that registers the function picks the job up where it is.
    poller = make_poller()
    register_counter(poller)
    async with poller:
        runs = await wait_for_runs(poller, job_id, in_state(JobRunState.SUCCEEDED, 1))
    assert runs[0].scheduled_at == first_tick
