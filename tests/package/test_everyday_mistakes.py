"""Everyday mistakes get a message that says how to fix them, or just work."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from fastapi_jobpoller import (
    ConfigurationError,
    CronTrigger,
    DateTrigger,
    Done,
    FunctionNotFoundError,
    IntervalTrigger,
    InvalidArgumentsError,
    InvalidTriggerError,
    JobPoller,
    JobPollerSettings,
    NotRunningError,
)
from tests.conftest import PollerFactory
from tests.helpers import sqlite_only

pytestmark = pytest.mark.anyio


@sqlite_only
def test_the_registration_decorators_work_without_parentheses_too(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function
    def forgot_parens() -> Done:
        return Done()

    @poller.job_function
    def nightly() -> None:
        return None

    @poller.callback
    def tell(poll: object) -> None:
        return None

    assert forgot_parens() == Done()  # still the function, not a registration helper
    assert poller.function_names("poll") == ["forgot_parens"]
    assert poller.function_names("job") == ["nightly"]
    assert poller.function_names("callback") == ["tell"]


@sqlite_only
def test_a_lambda_is_refused_with_the_reason_and_the_way_out(make_poller: PollerFactory) -> None:
    poller = make_poller()
    with pytest.raises(ConfigurationError) as refused:
        poller.poll_function()(lambda: Done())
    message = str(refused.value)
    assert "lambda" in message and "name" in message and "def" in message


@sqlite_only
def test_settings_may_be_given_by_keyword(database_url: str) -> None:
    settings = JobPollerSettings(database_url=database_url, table_prefix="kw_")
    assert JobPoller(settings=settings).settings.table_prefix == "kw_"


@sqlite_only
async def test_calling_a_poller_that_is_not_started_names_the_usual_way_to_start_it(
    make_poller: PollerFactory,
) -> None:
    with pytest.raises(NotRunningError) as refused:
        await make_poller().list_polls()
    assert "mount_scheduler(app, poller)" in str(refused.value)


def test_a_settings_error_never_prints_the_secret_it_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBPOLLER_API_KEY", "shortsecret")
    with pytest.raises(ConfigurationError) as refused:
        JobPoller()
    assert "shortsecret" not in str(refused.value) and "api_key" in str(refused.value)
    monkeypatch.delenv("JOBPOLLER_API_KEY")
    with pytest.raises(ValueError) as refused_directly:
        JobPollerSettings(read_api_key="tiny-secret")
    assert "tiny-secret" not in str(refused_directly.value)


def test_shown_settings_hide_the_database_password() -> None:
    url = "postgresql+psycopg://app:s3cr3t-pw@db.internal/orders"
    settings = JobPollerSettings(database_url=url)
    for shown in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cr3t-pw" not in shown and "app:***@db.internal" in shown
    assert "s3cr3t-pw" not in settings.model_dump_json()
    # The real URL is what connects, also after overrides.
    assert settings.database_url == url
    assert JobPoller(settings, table_prefix="other_").settings.database_url == url


# APScheduler habits: what users coming from the seed guide write first.


def test_a_crontab_line_has_from_crontab_and_the_positional_mistake_points_to_it() -> None:
    trigger = CronTrigger.from_crontab("30 2 * * *", timezone="Europe/Paris")
    assert (trigger.expression, trigger.timezone) == ("30 2 * * *", "Europe/Paris")
    with pytest.raises(TypeError, match=r"CronTrigger\.from_crontab\('30 2 \* \* \*'\)"):
        CronTrigger("30 2 * * *")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"minute": 60}, "minute=60 is out of range: minute runs from 0 to 59"),
        ({"hour": 25}, "hour=25 is out of range"),
        ({"hour": "0-25/2"}, "hour='0-25/2' is out of range"),
        ({"day": "0"}, "day='0' is out of range"),
        ({"minute": "*/0"}, "a step of 0"),
        ({"expression": "30 2 * *"}, "a crontab expression has 5 fields"),
        ({"minute": "1," * 150 + "1"}, "at most 200 characters"),
    ],
)
def test_a_cron_trigger_is_checked_when_built_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        CronTrigger(**fields)


@sqlite_only
async def test_a_declared_job_with_a_bad_trigger_is_refused_at_once_naming_the_job(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    refused: list[tuple[CronTrigger | dict[str, Any], str]] = [
        (CronTrigger(day_of_week="mnday"), "day_of_week='mnday': Invalid weekday name"),
        (CronTrigger(hour=2, timezone="Europe/Pariss"), "unknown time zone 'Europe/Pariss'"),
        ({"type": "cron", "hour": 99}, "hour=99 is out of range"),
    ]
    for trigger, reason in refused:
        with pytest.raises(InvalidTriggerError, match=re.escape(reason)) as caught:
            poller.declare_job("nightly", "report", trigger)
        assert str(caught.value).startswith("declared job 'nightly': ")


@sqlite_only
async def test_a_declared_job_whose_function_is_missing_names_the_job_when_the_start_fails(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    poller.declare_job("nightly", "not_registered", CronTrigger(hour=2))
    with pytest.raises(FunctionNotFoundError, match="^declared job 'nightly': "):
        async with poller:
            pass


@sqlite_only
async def test_add_job_written_the_apscheduler_way_says_what_to_write(
    poller: JobPoller,
) -> None:
    @poller.job_function()
    def report(day: str = "today") -> None:
        return None

    add_job: Any = poller.add_job  # the calls below are wrong on purpose
    with pytest.raises(TypeError, match=re.escape("write IntervalTrigger(seconds=30)")):
        await add_job("report", "interval", seconds=30)
    with pytest.raises(TypeError, match=re.escape("write CronTrigger(hour=2, minute=30)")):
        await add_job("report", "cron", hour=2, minute=30)
    with pytest.raises(TypeError, match=re.escape("takes the registered function's name")):
        await add_job(report, IntervalTrigger(seconds=30))
    with pytest.raises(TypeError, match=re.escape("args: write arguments={'name': value}")):
        await add_job("report", IntervalTrigger(seconds=30), args=["monday"])
    with pytest.raises(TypeError, match=re.escape("id: write job_id='...'")):
        await add_job("report", IntervalTrigger(seconds=30), id="daily")
    with pytest.raises(InvalidTriggerError, match=re.escape("not the name 'interval'")):
        await add_job("report", "interval")
    with pytest.raises(InvalidArgumentsError, match="arguments are a mapping"):
        await add_job("report", IntervalTrigger(seconds=30), arguments=["monday"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_instance'"):
        await add_job("report", IntervalTrigger(seconds=30), max_instance=2)  # a plain typo
    assert await poller.list_jobs() == []


@sqlite_only
async def test_a_date_trigger_older_than_its_grace_time_is_refused(poller: JobPoller) -> None:
    @poller.job_function()
    def once() -> None:
        return None

    past = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(InvalidTriggerError, match="would only be recorded as missed"):
        await poller.add_job("once", DateTrigger(run_date=past))
    # Within the grace time it is still a late run, not a mistake: it runs at once.
    recent = datetime.now(UTC) - timedelta(seconds=5)
    job = await poller.add_job("once", DateTrigger(run_date=recent), misfire_grace_time=60)
    assert job.next_run_at is not None
    assert (await poller.add_job("once", DateTrigger(run_date=past), misfire_grace_time=7200)).id


@sqlite_only
async def test_a_declared_date_job_already_past_is_skipped_with_a_warning(
    make_poller: PollerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    poller = make_poller()

    @poller.job_function()
    def once() -> None:
        return None

    poller.declare_job("launch", "once", DateTrigger(run_date=datetime(2020, 1, 1, tzinfo=UTC)))
    async with poller:
        assert await poller.list_jobs() == []
    assert "declared job 'launch' is not added" in caplog.text
