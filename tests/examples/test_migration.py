"""examples/migrate_from_apscheduler.py: the inventory of an APScheduler 3 job store.

The old jobs are written by APScheduler itself (a paused `BackgroundScheduler` with a
`SQLAlchemyJobStore` on a SQLite file), as the hand-written setup this library replaces
would have stored them; the functions they name are the ones below.
"""

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger as APSchedulerCronTrigger

from fastapi_jobpoller import CronTrigger, DateTrigger, IntervalTrigger
from tests.conftest import PollerFactory
from tests.support.examples_support import load_example

REMINDER_AT = datetime(2031, 5, 4, 9, 15, tzinfo=UTC)


# The old app's job functions, importable by APScheduler's "module:name" references.
def cleanup_old_logs() -> None: ...


def generate_daily_report() -> None: ...


def poll_spark_status(request_id: str, spark_job_id: str) -> None: ...


def send_reminder(user_id: str, message: str) -> None: ...


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("migrate_from_apscheduler")


@pytest.fixture
def old_store(tmp_path: Path) -> Iterator[str]:
    """A SQLite job store with the jobs of a typical hand-written setup."""
    url = f"sqlite:///{tmp_path}/scheduler.db"
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)}, timezone="UTC"
    )
    scheduler.start(paused=True)
    try:
        scheduler.add_job(cleanup_old_logs, "cron", hour=2, minute=30, id="daily_cleanup")
        scheduler.add_job(
            generate_daily_report,
            APSchedulerCronTrigger(
                day_of_week="mon-fri", hour=9, minute=0, timezone="Europe/Paris"
            ),
            id="daily_report",
        )
        scheduler.add_job(
            poll_spark_status, "interval", seconds=30, args=["req-42", "spark-1"], id="req-42"
        )
        scheduler.add_job(
            send_reminder,
            "date",
            run_date=REMINDER_AT,
            kwargs={"user_id": "u-1", "message": "Meeting in 5 minutes"},
            id="reminder_u-1",
        )
        scheduler.add_job(cleanup_old_logs, "interval", hours=1, id="hourly_cleanup")
        scheduler.pause_job("hourly_cleanup")
    finally:
        scheduler.shutdown(wait=False)
    yield url


def row_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(connection.execute(sa.text("SELECT id FROM apscheduler_jobs")).scalars())
    finally:
        engine.dispose()


def test_the_inventory_lists_every_stored_job_with_its_function_and_arguments(
    example: ModuleType, old_store: str
) -> None:
    jobs = example.read_apscheduler_jobs(old_store)
    module = __name__
    assert [(j.id, j.function, j.args, j.kwargs) for j in jobs] == [
        ("daily_cleanup", f"{module}:cleanup_old_logs", (), {}),
        ("daily_report", f"{module}:generate_daily_report", (), {}),
        ("hourly_cleanup", f"{module}:cleanup_old_logs", (), {}),
        (
            "reminder_u-1",
            f"{module}:send_reminder",
            (),
            {"user_id": "u-1", "message": "Meeting in 5 minutes"},
        ),
        ("req-42", f"{module}:poll_spark_status", ("req-42", "spark-1"), {}),
    ]
    paused = [job.id for job in jobs if job.next_run_time is None]
    assert paused == ["hourly_cleanup"]
    assert [job.function_name for job in jobs][:2] == ["cleanup_old_logs", "generate_daily_report"]


def test_each_translated_trigger_has_the_old_triggers_fields_and_zone(
    example: ModuleType, old_store: str
) -> None:
    old_jobs = {job.id: job for job in example.read_apscheduler_jobs(old_store)}
    triggers = {job_id: example.translate_trigger(job.trigger) for job_id, job in old_jobs.items()}
    # The scheduler's zone, "UTC", is stored as the zone APScheduler resolved it to.
    utc_names = {"UTC", "Etc/UTC"}
    cleanup = triggers["daily_cleanup"]
    assert cleanup.timezone in utc_names
    assert cleanup == CronTrigger(hour="2", minute="30", timezone=cleanup.timezone)
    assert triggers["daily_report"] == CronTrigger(
        day_of_week="mon-fri", hour="9", minute="0", timezone="Europe/Paris"
    )
    assert triggers["reminder_u-1"] == DateTrigger(run_date=REMINDER_AT)
    interval = triggers["req-42"]
    assert isinstance(interval, IntervalTrigger)
    assert interval.period_seconds == 30
    assert interval.timezone in utc_names
    assert interval.start_date == old_jobs["req-42"].trigger.start_date


@pytest.mark.anyio
async def test_declared_with_the_translated_triggers_the_jobs_next_run_as_apschedulers_would(
    example: ModuleType, old_store: str, make_poller: PollerFactory
) -> None:
    poller = make_poller()

    @poller.job_function()
    def moved() -> None: ...

    old_jobs = example.read_apscheduler_jobs(old_store)
    async with poller:
        for old in old_jobs:
            job = await poller.add_job(
                "moved", example.translate_trigger(old.trigger), job_id=old.id
            )
            expected = old.trigger.get_next_fire_time(None, job.created_at)
            assert job.next_run_at == expected, old.id


def test_reading_deletes_nothing_not_even_a_job_whose_function_is_gone(
    example: ModuleType, old_store: str
) -> None:
    engine = sa.create_engine(old_store)
    try:
        with engine.begin() as connection:
            state = pickle.loads(
                connection.execute(
                    sa.text("SELECT job_state FROM apscheduler_jobs WHERE id = 'daily_cleanup'")
                ).scalar_one()
            )
            state.update(id="renamed", func="old_app.removed_module:cleanup")
            connection.execute(
                sa.text("INSERT INTO apscheduler_jobs VALUES ('renamed', NULL, :state)"),
                {"state": pickle.dumps(state)},
            )
    finally:
        engine.dispose()
    before = row_ids(old_store)

    jobs = example.read_apscheduler_jobs(old_store)

    assert "renamed" in [job.id for job in jobs]
    assert row_ids(old_store) == before
    # APScheduler's own store, by contrast, deletes the rows it cannot restore.
    store = SQLAlchemyJobStore(url=old_store)
    try:
        store.get_all_jobs()
    finally:
        store.shutdown()
    assert "renamed" not in row_ids(old_store)


def test_the_script_prints_a_declaration_per_job(
    example: ModuleType, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main([old_store]) == 0
    output = capsys.readouterr().out
    assert "poller.declare_job('daily_report', 'generate_daily_report', CronTrigger(" in output
    assert "day_of_week='mon-fri', hour='9', minute='0'" in output
    assert "# and positional arguments ['req-42', 'spark-1']" in output
    assert "hourly_cleanup: " in output and ", next paused" in output
    assert output.splitlines()[-1] == "5 jobs"


def test_the_script_explains_its_arguments(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main([]) == 2
    assert "usage: migrate_from_apscheduler.py DATABASE_URL" in capsys.readouterr().err
