"""A mixed "poison" run: healthy polls and jobs beside one row of each kind the engine
cannot use. Every healthy item keeps its schedule, each bad row is set aside (or waits
for a process that can run it) and reported once, and `/health` names the problem."""

import logging
from collections import Counter

import anyio
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import IntervalTrigger, JobPoller, JobRunState, Pending
from tests.conftest import FAST_SETTINGS, POSTGRESQL_URL_ENV, server_url
from tests.helpers import change_rows, field, library_records

pytestmark = pytest.mark.anyio

RUN_SECONDS = 20.0
INTERVAL = 0.5
HEALTHY_POLLS = 200


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """SQLite and PostgreSQL: the claim and quarantine statements differ between them."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobpoller.db"
    return server_url(POSTGRESQL_URL_ENV)


async def test_bad_rows_of_every_kind_stop_nothing_and_are_each_reported_once(
    database_url: str, table_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_jobpoller")
    poller = JobPoller(
        **{**FAST_SETTINGS, "idle_wait_seconds": 0.1},
        database_url=database_url,
        table_prefix=table_prefix,
        attempt_history="all",
        recheck_seconds=1.0,
        unknown_function_retry_seconds=1.0,
    )

    @poller.poll_function()
    def healthy(key: str) -> Pending:
        return Pending(progress=key)

    @poller.job_function()
    async def beat() -> None:
        return None

    async with poller:
        polls = poller._database.tables.polls  # type: ignore[union-attr]
        jobs = poller._database.tables.jobs  # type: ignore[union-attr]
        every = IntervalTrigger(seconds=INTERVAL)
        healthy_polls = [
            (await poller.start_poll("healthy", {"key": str(n)}, interval=INTERVAL)).id
            for n in range(HEALTHY_POLLS)
        ]
        healthy_jobs = [(await poller.add_job("beat", every)).id for _ in range(3)]
        # One row of each kind the engine cannot use.
        await poller.add_job("beat", every, job_id="bad-trigger")
        change_rows(
            poller,
            sa.update(jobs)
            .where(jobs.c.id == "bad-trigger")
            .values(trigger={"type": "cron", "hour": 2, "timezone": "Mars/Olympus"}),
        )
        await poller.add_job("beat", every, job_id="nobody-runs-it")
        change_rows(
            poller,
            sa.update(jobs)
            .where(jobs.c.id == "nobody-runs-it")
            .values(function="gone_in_this_release"),
        )
        bad_arguments = await poller.start_poll("healthy", {"key": "a"}, delay=3600)
        change_rows(
            poller,
            sa.update(polls)
            .where(polls.c.id == bad_arguments.id)
            .values(arguments=["x"], next_poll_at=sa.func.current_timestamp()),
        )
        bad_callbacks = await poller.start_poll("healthy", {"key": "c"}, delay=3600)
        change_rows(
            poller,
            sa.update(polls)
            .where(polls.c.id == bad_callbacks.id)
            .values(
                state="failed",
                callbacks="abc",
                callbacks_pending=True,
                next_poll_at=sa.func.current_timestamp(),
            ),
        )
        unknown = await poller.start_poll("healthy", {"key": "u"}, delay=3600)
        change_rows(
            poller,
            sa.update(polls)
            .where(polls.c.id == unknown.id)
            .values(function="gone_in_this_release", next_poll_at=sa.func.current_timestamp()),
        )

        await anyio.sleep(RUN_SECONDS)
        health = await poller.health()
        quarantined = {(row.kind, row.id) for row in await poller.list_quarantined()}
        attempts = {p.id: p.attempts for p in await poller.list_polls(limit=1000)}
        runs = await poller.list_job_runs(limit=1000)
        unknown_now = await poller.get_poll(unknown.id)
        unclaimed = await poller.list_job_runs(job_id="nobody-runs-it")
    # Every healthy item kept its pace: most of its due attempts and ticks, none skipped.
    due = RUN_SECONDS / INTERVAL
    slow = {poll_id: attempts[poll_id] for poll_id in healthy_polls if attempts[poll_id] < due / 2}
    assert slow == {}, "healthy polls fell behind"
    by_job = Counter(run.job_id for run in runs if run.state is JobRunState.SUCCEEDED)
    assert all(by_job[job_id] >= due / 2 for job_id in healthy_jobs), by_job
    assert not [r for r in runs if r.state in (JobRunState.SKIPPED, JobRunState.MISSED)]
    # Each bad row set aside, or left waiting for a process that can run it.
    assert quarantined == {
        ("job", "bad-trigger"),
        ("poll", bad_arguments.id),
        ("poll", bad_callbacks.id),
    }
    assert unknown_now.attempts == 0 and "gone_in_this_release" in (unknown_now.error or "")
    assert unclaimed == []
    # Reported once: no warning repeated for the same row, trouble and event.
    said = Counter(
        (field(r, "event"), field(r, "poll_id") or field(r, "job_id"), field(r, "error"))
        for r in library_records(caplog)
        if r.levelno >= logging.WARNING
    )
    assert [key for key, count in said.items() if count > 1] == []
    assert health.status == "degraded" and health.quarantined == 3
    assert any("set aside" in problem for problem in health.problems), health.problems
