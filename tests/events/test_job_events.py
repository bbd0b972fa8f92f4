"""Job events: each change of a job and each run's outcome fire once, matching the stored
records; the scheduler's start and stop fire once each."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import EventType, IntervalTrigger, JobRunState
from fastapi_jobpoller._storage.database import Database
from tests.conftest import PollerFactory
from tests.helpers import (
    EVENT_OF_RUN_STATE,
    FAR_FUTURE,
    QUIET,
    WAIT,
    Recorder,
    build,
    eventually,
    sqlite_only,
)

pytestmark = pytest.mark.anyio


async def test_job_definition_events_fire_once_per_change(make_poller: PollerFactory) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        await poller.add_job("noop", FAR_FUTURE, job_id="j")
        await poller.modify_job("j", max_instances=2)
        await poller.pause_job("j")
        await poller.resume_job("j")
        await poller.reschedule_job("j", IntervalTrigger(hours=1))
        await poller.remove_job("j")

    changes = [
        (e.type, e.job_id, e.function) for e in recorder.events if e.type.value.startswith("job_")
    ]
    assert changes == [
        (EventType.JOB_ADDED, "j", "noop"),
        (EventType.JOB_MODIFIED, "j", "noop"),
        (EventType.JOB_PAUSED, "j", "noop"),
        (EventType.JOB_RESUMED, "j", "noop"),
        (EventType.JOB_MODIFIED, "j", "noop"),
        (EventType.JOB_REMOVED, "j", None),
    ]


async def test_each_job_run_fires_one_outcome_event_that_matches_its_stored_record(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    every = IntervalTrigger(seconds=0.05)
    async with poller:
        await poller.add_job("every_other", every, arguments={"key": "e"}, job_id="flaky")
        await poller.add_job("noop", every, job_id="late", misfire_grace_time=0)
        await poller.add_job("slow", every, arguments={"seconds": 0.3}, job_id="busy")

        async def stored_states() -> Counter[JobRunState]:
            return Counter(r.state for r in await poller.list_job_runs(limit=1000))

        with anyio.fail_after(WAIT):
            while True:
                states = await stored_states()
                if all(states[s] >= 2 for s in EVENT_OF_RUN_STATE):
                    break
                await anyio.sleep(0.05)
        for job_id in ("flaky", "late", "busy"):
            await poller.pause_job(job_id)
        with anyio.fail_after(WAIT):
            while True:
                if not (await stored_states())[JobRunState.RUNNING]:
                    break
                await anyio.sleep(0.05)
        runs = {run.id: run for run in await poller.list_job_runs(limit=1000)}

    outcomes = recorder.of(*EVENT_OF_RUN_STATE.values())
    assert Counter(e.run_id for e in outcomes) == dict.fromkeys(runs, 1)
    for event in outcomes:
        run = runs[event.run_id or ""]
        assert event.type is EVENT_OF_RUN_STATE[run.state], run
        assert (event.job_id, event.function, event.scheduled_at, event.attempt) == (
            run.job_id,
            run.function,
            run.scheduled_at,
            run.attempt,
        )
        assert event.outcome == run.state.value
        if run.state in (JobRunState.SUCCEEDED, JobRunState.FAILED):
            assert event.started_at == run.started_at
            assert event.duration is not None and event.duration >= 0
            assert (event.result, event.error, event.traceback) == (
                run.result,
                run.error,
                run.traceback,
            )
        else:
            assert event.error == run.error
    submitted = recorder.of(EventType.JOB_SUBMITTED)
    executed = {
        run_id
        for run_id, run in runs.items()
        if run.state in (JobRunState.SUCCEEDED, JobRunState.FAILED)
    }
    assert Counter(e.run_id for e in submitted) == dict.fromkeys(executed, 1)
    failed = [e for e in outcomes if e.type is EventType.JOB_ERROR]
    assert all(e.error and e.error.startswith("ValueError: even call") for e in failed)
    assert all(e.traceback and "ValueError" in e.traceback for e in failed)


async def test_a_run_given_up_after_its_workers_were_lost_fires_one_job_error(
    make_poller: PollerFactory, database_url: str, table_prefix: str
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder)
    async with poller:
        await poller.add_job("noop", FAR_FUTURE, job_id="j")
        # A run whose third worker died holding it: its lease has expired.
        database = Database(database_url, table_prefix=table_prefix)
        runs = database.tables.job_runs
        now = datetime.now(UTC)
        lost = {
            "id": "lost-run",
            "job_id": "j",
            "function": "noop",
            "arguments": {},
            "scheduled_at": now - timedelta(seconds=60),
            "state": "running",
            "attempt": 3,
            "due_at": now - timedelta(seconds=1),
            "worker": "a-dead-process",
            "started_at": now - timedelta(seconds=40),
        }
        try:
            with database.transaction() as connection:
                connection.execute(sa.insert(runs).values(**lost))
            await eventually(
                lambda: bool(recorder.of(EventType.JOB_ERROR)), "the given-up run was reported"
            )
            run = await poller.get_job_run("lost-run")
            await anyio.sleep(QUIET)
        finally:
            database.dispose()

    assert run.state is JobRunState.FAILED
    (error,) = recorder.of(EventType.JOB_ERROR)
    assert (error.run_id, error.job_id, error.function) == ("lost-run", "j", "noop")
    assert error.attempt == 3
    assert (error.outcome, error.error) == ("failed", run.error)
    assert run.error is not None and "worker lost 3 times" in run.error
    assert recorder.of(EventType.JOB_SUBMITTED, EventType.JOB_EXECUTED) == []


@sqlite_only
async def test_scheduler_started_and_stopped_fire_once_per_start_and_stop(
    make_poller: PollerFactory,
) -> None:
    poller, recorder = build(make_poller), Recorder()
    poller.add_listener(recorder, EventType.SCHEDULER_STARTED, EventType.SCHEDULER_STOPPED)
    for _ in range(2):
        async with poller:
            await poller.start()  # starting twice does nothing
        await poller.shutdown()  # nor does stopping twice

    assert [e.type for e in recorder.events] == [
        EventType.SCHEDULER_STARTED,
        EventType.SCHEDULER_STOPPED,
    ] * 2
    assert {e.worker_id for e in recorder.events} == {poller.worker_id}
