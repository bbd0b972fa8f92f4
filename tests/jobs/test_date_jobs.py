"""A date job's one tick is recorded once, whatever pauses and resumes happen around it,
with two pollers (two engines) sharing the database."""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from fastapi_jobpoller import (
    DateTrigger,
    IntervalTrigger,
    JobNotFoundError,
    JobPoller,
    JobRunState,
)
from tests.conftest import PollerFactory
from tests.helpers import QUIET, wait_for_runs

pytestmark = pytest.mark.anyio


def build(make_poller: PollerFactory, entered: asyncio.Event) -> JobPoller:
    poller = make_poller()

    @poller.job_function()
    async def remind(seconds: float = 0.0) -> str:
        entered.set()
        await asyncio.sleep(seconds)
        return "sent"

    @poller.job_function()
    async def heartbeat() -> None:
        return None

    return poller


async def sleep_until(moment: datetime) -> None:
    await anyio.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))


async def test_paused_during_its_run_and_resumed_a_date_job_runs_once(
    make_poller: PollerFactory,
) -> None:
    entered = asyncio.Event()
    first, second = build(make_poller, entered), build(make_poller, entered)
    async with first, second:
        run_date = datetime.now(UTC) + timedelta(seconds=0.3)
        await first.add_job(
            "remind", DateTrigger(run_date=run_date), job_id="r", arguments={"seconds": 0.5}
        )
        with anyio.fail_after(15):
            await entered.wait()
        await first.pause_job("r")  # while it runs
        await wait_for_runs(first, "r", lambda runs: any(r.finished_at for r in runs))
        await second.resume_job("r")  # points the job at its tick again
        beat = await second.add_job("heartbeat", IntervalTrigger(seconds=0.05))
        await wait_for_runs(second, beat.id, lambda runs: len(runs) >= 5)
        await anyio.sleep(QUIET)
        runs = await first.list_job_runs(job_id="r")
        jobs = [job.id for job in await first.list_jobs()]
    assert [(r.scheduled_at, r.state) for r in runs] == [(run_date, JobRunState.SUCCEEDED)]
    assert "r" not in jobs


@pytest.mark.parametrize(
    ("grace", "state"), [(60.0, JobRunState.SUCCEEDED), (0.1, JobRunState.MISSED)]
)
async def test_a_date_tick_missed_while_paused_follows_the_misfire_grace_time_once(
    make_poller: PollerFactory, grace: float, state: JobRunState
) -> None:
    entered = asyncio.Event()
    first, second = build(make_poller, entered), build(make_poller, entered)
    async with first, second:
        run_date = datetime.now(UTC) + timedelta(seconds=0.3)
        await first.add_job(
            "remind", DateTrigger(run_date=run_date), job_id="r", misfire_grace_time=grace
        )
        await first.pause_job("r")
        await sleep_until(run_date + timedelta(seconds=0.4))
        await second.resume_job("r")
        await wait_for_runs(second, "r", lambda runs: any(r.finished_at for r in runs))
        # Paused and resumed again afterwards, if the spent job is not deleted yet: nothing
        # more happens.
        with contextlib.suppress(JobNotFoundError):
            await first.pause_job("r")
            await second.resume_job("r")
        await anyio.sleep(QUIET)
        runs = await first.list_job_runs(job_id="r")
    assert [(r.scheduled_at, r.state) for r in runs] == [(run_date, state)]
