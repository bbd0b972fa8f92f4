"""Jobs declared in code with `declare_job`: created at start, kept across restarts."""

import asyncio
from datetime import timedelta

import pytest

from fastapi_jobpoller import ConfigurationError, IntervalTrigger, JobPoller, JobRunState
from tests.conftest import PollerFactory

pytestmark = pytest.mark.anyio


def declaring_poller(make_poller: PollerFactory, *, seconds: float = 0.1) -> JobPoller:
    poller = make_poller()

    @poller.job_function()
    def cleanup(days: int = 30) -> int:
        return days

    poller.declare_job(
        "nightly-cleanup", "cleanup", IntervalTrigger(seconds=seconds), arguments={"days": 7}
    )
    return poller


async def test_a_declared_job_is_created_at_start_and_runs(make_poller: PollerFactory) -> None:
    async with declaring_poller(make_poller) as poller:
        job = await poller.get_job("nightly-cleanup")
        assert job.arguments == {"days": 7}
        for _ in range(100):
            runs = await poller.list_job_runs(job_id="nightly-cleanup")
            if any(r.state is JobRunState.SUCCEEDED for r in runs):
                break
            await asyncio.sleep(0.05)
        succeeded = [r for r in runs if r.state is JobRunState.SUCCEEDED]
        assert succeeded and succeeded[0].result == 7
        assert succeeded[0].duration is not None and succeeded[0].duration >= 0


async def test_a_restart_keeps_a_declared_job_its_schedule_and_its_pause(
    make_poller: PollerFactory,
) -> None:
    async with declaring_poller(make_poller, seconds=60) as poller:
        first = await poller.pause_job("nightly-cleanup")
    async with declaring_poller(make_poller, seconds=60) as poller:
        again = await poller.get_job("nightly-cleanup")
    assert again.paused is True
    assert again.trigger == first.trigger
    assert again.created_at == first.created_at
    assert again.updated_at == first.updated_at  # nothing was rewritten


async def test_a_changed_declaration_updates_the_stored_job(make_poller: PollerFactory) -> None:
    async with declaring_poller(make_poller, seconds=60) as poller:
        before = await poller.get_job("nightly-cleanup")
    async with declaring_poller(make_poller, seconds=120) as poller:
        after = await poller.get_job("nightly-cleanup")
    assert isinstance(after.trigger, IntervalTrigger)
    assert after.trigger.seconds == 120
    assert after.created_at == before.created_at
    assert after.next_run_at is not None and before.next_run_at is not None
    assert after.next_run_at - before.next_run_at > timedelta(seconds=30)


async def test_declaring_after_start_or_twice_is_a_configuration_error(
    make_poller: PollerFactory,
) -> None:
    poller = declaring_poller(make_poller)
    with pytest.raises(ConfigurationError, match="declared already"):
        poller.declare_job("nightly-cleanup", "cleanup", IntervalTrigger(seconds=1))
    async with poller:
        with pytest.raises(ConfigurationError, match="before start"):
            poller.declare_job("other", "cleanup", IntervalTrigger(seconds=1))


async def test_two_processes_starting_together_both_start_with_one_declared_job(
    make_poller: PollerFactory,
) -> None:
    first, second = declaring_poller(make_poller), declaring_poller(make_poller)
    await asyncio.gather(first.start(), second.start())
    try:
        jobs = await first.list_jobs()
        assert [job.id for job in jobs] == ["nightly-cleanup"]
        assert second.running
    finally:
        await asyncio.gather(first.shutdown(), second.shutdown())
