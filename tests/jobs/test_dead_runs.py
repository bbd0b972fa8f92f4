"""A run whose process died holds its job's `max_instances` slot only until its lease
expires: few ticks are skipped meanwhile, then the dead run is run again and the ticks
after it are on time. (The run row is left as a SIGKILLed process leaves it: running,
leased by a worker that no longer renews.)"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from fastapi_jobpoller import IntervalTrigger, JobRunState
from tests.conftest import PollerFactory
from tests.helpers import wait_for_runs

pytestmark = pytest.mark.anyio

LEASE = 1.0
PERIOD = 0.2


async def test_a_dead_run_blocks_max_instances_only_until_its_lease_expires(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(lease_seconds=LEASE)

    @poller.job_function()
    async def beat() -> None:
        return None

    async with poller:
        job = await poller.add_job("beat", IntervalTrigger(seconds=PERIOD), max_instances=1)
        await wait_for_runs(poller, job.id, lambda runs: len(runs) >= 2)
        killed_at = datetime.now(UTC)
        dead = {
            "id": uuid.uuid4().hex,
            "job_id": job.id,
            "function": "beat",
            "arguments": {},
            "scheduled_at": killed_at - timedelta(seconds=30),
            "state": JobRunState.RUNNING.value,
            "attempt": 1,
            "due_at": killed_at + timedelta(seconds=LEASE),
            "worker": "host:4242:killed",
            "started_at": killed_at,
        }
        database = poller._database
        assert database is not None
        with database.transaction() as connection:
            connection.execute(sa.insert(database.tables.job_runs).values(**dead))
        lease_over = killed_at + timedelta(seconds=LEASE)
        runs = await wait_for_runs(
            poller,
            job.id,
            lambda runs: (
                sum(r.state is JobRunState.SUCCEEDED and r.scheduled_at > lease_over for r in runs)
                >= 5
            ),
        )
    skipped = [r for r in runs if r.state is JobRunState.SKIPPED]
    rerun = next(r for r in runs if r.id == dead["id"])
    # Ticks due while the dead run held the slot: about LEASE / PERIOD of them.
    assert 1 <= len(skipped) <= LEASE / PERIOD + 2, skipped
    assert all(r.scheduled_at <= lease_over + timedelta(seconds=0.5) for r in skipped)
    assert (rerun.state, rerun.attempt) == (JobRunState.SUCCEEDED, 2)
    after = [r for r in runs if r.scheduled_at > lease_over + timedelta(seconds=0.5)]
    # On time: run, none skipped for the dead run nor missed (later than the grace time).
    assert after and all(r.state is JobRunState.SUCCEEDED for r in after)
