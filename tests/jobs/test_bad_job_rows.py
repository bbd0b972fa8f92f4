"""A job row the engine cannot use is set aside on its own; every other job keeps its
schedule (issue: one bad row must never stop the rest)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import (
    DateTrigger,
    EventType,
    IntervalTrigger,
    JobAlreadyRanError,
    JobPoller,
    JobRunState,
)
from fastapi_jobpoller.models import JobRunInfo
from tests.conftest import PollerFactory
from tests.helpers import WAIT, Recorder, change_rows, wait_for_runs

pytestmark = pytest.mark.anyio

PERIOD = 0.1


def register(poller: JobPoller) -> None:
    @poller.job_function()
    async def heartbeat() -> None:
        return None

    @poller.job_function()
    async def remind(note: str = "") -> str:
        return note


def ticking(count: int) -> Any:
    return lambda runs: sum(r.state is JobRunState.SUCCEEDED for r in runs) >= count


async def set_aside(poller: JobPoller, count: int) -> None:
    """Wait until `count` rows are listed as set aside."""
    with anyio.fail_after(WAIT):
        while True:
            if len(await poller.list_quarantined()) >= count:
                return
            await anyio.sleep(0.02)


async def keeps_ticking(poller: JobPoller, job_id: str, more: int = 5) -> list[JobRunInfo]:
    """Wait for `more` further successful runs of an interval job; return its runs."""
    done = len(await wait_for_runs(poller, job_id, lambda runs: True))
    return await wait_for_runs(poller, job_id, ticking(done + more))


async def test_a_date_job_added_again_after_its_tick_ran_is_refused_and_jams_nothing(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    register(poller)
    async with poller:
        heartbeat = await poller.add_job("heartbeat", IntervalTrigger(seconds=PERIOD))
        run_date = datetime.now(UTC) + timedelta(seconds=0.2)
        trigger = DateTrigger(run_date=run_date)
        await poller.add_job("remind", trigger, job_id="r1", arguments={"note": "hi"})
        await wait_for_runs(poller, "r1", ticking(1))
        with pytest.raises(JobAlreadyRanError) as refused:
            await poller.add_job("remind", trigger, job_id="r1", arguments={"note": "hi"})
        with pytest.raises(JobAlreadyRanError):
            await poller.add_job("remind", trigger, job_id="r1", replace_existing=True)
        await keeps_ticking(poller, heartbeat.id)
        runs = await poller.list_job_runs(job_id="r1")
    assert refused.value.code == "job_already_ran"
    assert [(r.state, r.scheduled_at) for r in runs] == [(JobRunState.SUCCEEDED, run_date)]


async def test_a_declared_date_job_that_already_ran_is_not_added_again_at_restart(
    make_poller: PollerFactory,
) -> None:
    run_date = datetime.now(UTC) + timedelta(seconds=0.2)
    for start in range(2):
        poller = make_poller()
        register(poller)
        poller.declare_job("r1", "remind", DateTrigger(run_date=run_date))
        poller.declare_job("beat", "heartbeat", IntervalTrigger(seconds=PERIOD))
        async with poller:
            if start == 0:
                await wait_for_runs(poller, "r1", ticking(1))
            else:
                await keeps_ticking(poller, "beat")
                runs = await poller.list_job_runs(job_id="r1")
    assert [r.state for r in runs] == [JobRunState.SUCCEEDED]


async def test_the_same_job_added_twice_is_returned_as_stored(make_poller: PollerFactory) -> None:
    poller = make_poller()
    register(poller)
    async with poller:
        trigger = IntervalTrigger(seconds=60)
        first = await poller.add_job("remind", trigger, job_id="j", arguments={"note": "a"})
        again = await poller.add_job("remind", trigger, job_id="j", arguments={"note": "a"})
        assert again == first
        with pytest.raises(Exception) as other:
            await poller.add_job("remind", trigger, job_id="j", arguments={"note": "b"})
    assert getattr(other.value, "code", None) == "job_conflict"


async def test_a_tick_recorded_already_is_not_recorded_again(make_poller: PollerFactory) -> None:
    """A paused date job resumed after its tick ran must not run a second time (the
    resume points it at the tick again): the claim sees the tick's run and moves on."""
    poller = make_poller()
    register(poller)
    async with poller:
        heartbeat = await poller.add_job("heartbeat", IntervalTrigger(seconds=PERIOD))
        run_date = datetime.now(UTC) + timedelta(seconds=0.2)
        await poller.add_job("remind", DateTrigger(run_date=run_date), job_id="r1")
        await wait_for_runs(poller, "r1", ticking(1))
        # The tick ran; a process resuming the job sets its next tick back to run_date.
        jobs = poller._database.tables.jobs  # type: ignore[union-attr]
        change_rows(
            poller,
            sa.insert(jobs).values(
                id="r1",
                function="remind",
                arguments={},
                trigger=DateTrigger(run_date=run_date).model_dump(mode="json"),
                next_run_at=run_date,
                paused=False,
                misfire_grace_time=1.0,
                coalesce=True,
                max_instances=1,
                created_at=run_date,
                updated_at=run_date,
            ),
        )
        await keeps_ticking(poller, heartbeat.id)
        runs = await poller.list_job_runs(job_id="r1")
        remaining = [job.id for job in await poller.list_jobs()]
    assert [r.scheduled_at for r in runs] == [run_date]
    assert remaining == [heartbeat.id]


@pytest.mark.parametrize(
    "bad_trigger",
    [
        {"type": "weekly", "day": "mon"},
        {"type": "cron", "hour": 2, "timezone": "Mars/Olympus"},
        {"type": "interval", "seconds": 1, "every_other": True},
    ],
    ids=["unknown-type", "unknown-zone", "unknown-field"],
)
async def test_a_job_whose_stored_trigger_is_unusable_is_set_aside_and_the_rest_keep_ticking(
    make_poller: PollerFactory, bad_trigger: dict[str, Any]
) -> None:
    poller = make_poller(recheck_seconds=0.2)
    register(poller)
    recorder = Recorder()
    poller.add_listener(recorder, EventType.JOB_QUARANTINED)
    async with poller:
        heartbeat = await poller.add_job("heartbeat", IntervalTrigger(seconds=PERIOD))
        bad = await poller.add_job("remind", IntervalTrigger(seconds=PERIOD), job_id="bad")
        jobs = poller._database.tables.jobs  # type: ignore[union-attr]
        change_rows(poller, sa.update(jobs).where(jobs.c.id == "bad").values(trigger=bad_trigger))
        await keeps_ticking(poller, heartbeat.id, more=10)
        listed = await poller.list_quarantined()
        stored = await poller.get_job("bad")
        page = await poller.list_jobs()
        health = await poller.health()
        # Fixed through the API: a new trigger, and the job runs again.
        await poller.reschedule_job("bad", IntervalTrigger(seconds=PERIOD))
        await keeps_ticking(poller, "bad", more=2)
        after = await poller.list_quarantined()
    assert [(row.kind, row.id) for row in listed] == [("job", "bad")]
    assert "trigger" in listed[0].reason
    assert stored.problem is not None and stored.problem.startswith(listed[0].reason)
    assert {job.id for job in page} == {heartbeat.id, bad.id}
    assert health.status == "degraded" and health.quarantined == 1
    assert [event.job_id for event in recorder.events] == ["bad"]  # reported once
    assert after == []


async def test_a_set_aside_job_fixed_in_the_database_resumes_at_the_next_recheck(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(recheck_seconds=0.2)
    register(poller)
    async with poller:
        good = IntervalTrigger(seconds=PERIOD).model_dump(mode="json")
        await poller.add_job("remind", IntervalTrigger(seconds=PERIOD), job_id="bad")
        jobs = poller._database.tables.jobs  # type: ignore[union-attr]
        change_rows(poller, sa.update(jobs).where(jobs.c.id == "bad").values(trigger={"type": "?"}))
        await set_aside(poller, 1)
        change_rows(poller, sa.update(jobs).where(jobs.c.id == "bad").values(trigger=good))
        await keeps_ticking(poller, "bad", more=2)
        assert await poller.list_quarantined() == []
