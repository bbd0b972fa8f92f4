"""The trigger layer: fire times from interval, cron and date triggers, and their errors.

Most tests call `_apscheduler` directly with fixed clocks; the last ones check that the
public `JobPoller.add_job` / `reschedule_job` turn every invalid trigger into
`InvalidTriggerError`, whatever form it was given in.
"""

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from fastapi_jobpoller import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    InvalidTriggerError,
    JobPoller,
)
from fastapi_jobpoller._apscheduler import first_fire_time, next_fire_time, normalize_trigger
from fastapi_jobpoller.models import Trigger
from tests.conftest import FAST_SETTINGS

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


def first(trigger: Trigger, now: datetime = NOW, zone: str = "UTC") -> datetime | None:
    return first_fire_time(trigger, default_zone=zone, now=now)


def following(
    trigger: Trigger,
    *,
    previous: datetime,
    now: datetime,
    coalesce: bool,
    zone: str = "UTC",
) -> datetime | None:
    return next_fire_time(trigger, default_zone=zone, previous=previous, now=now, coalesce=coalesce)


def ticks(trigger: Trigger, start: datetime, count: int, zone: str = "UTC") -> list[datetime]:
    """Return `count` consecutive ticks from `start`, each computed from the one before."""
    tick = first(trigger, start, zone)
    result: list[datetime] = []
    while tick is not None and len(result) < count:
        result.append(tick)
        tick = following(trigger, previous=tick, now=tick, coalesce=False, zone=zone)
    return result


# -- interval ------------------------------------------------------------------------


def test_an_interval_trigger_fires_every_period_from_its_start_date() -> None:
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    trigger = IntervalTrigger(minutes=15, start_date=start)

    assert ticks(trigger, start - timedelta(hours=1), 4) == [
        start,
        start + timedelta(minutes=15),
        start + timedelta(minutes=30),
        start + timedelta(minutes=45),
    ]


def test_an_interval_trigger_started_in_the_past_fires_next_on_its_own_grid() -> None:
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    trigger = IntervalTrigger(hours=1, start_date=start)

    assert first(trigger, start + timedelta(hours=5, minutes=20)) == start + timedelta(hours=6)


def test_an_interval_trigger_adds_up_all_its_units() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = IntervalTrigger(weeks=1, days=1, hours=1, minutes=1, seconds=1, start_date=start)

    assert trigger.period_seconds == 604_800 + 86_400 + 3600 + 60 + 1
    assert following(trigger, previous=start, now=start, coalesce=False) == start + timedelta(
        weeks=1, days=1, hours=1, minutes=1, seconds=1
    )


def test_an_interval_trigger_stops_after_its_end_date() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = IntervalTrigger(hours=1, start_date=start, end_date=start + timedelta(hours=2))

    assert ticks(trigger, start, 10) == [
        start,
        start + timedelta(hours=1),
        start + timedelta(hours=2),
    ]


@pytest.mark.parametrize(
    "fields",
    [{}, {"seconds": 0}, {"seconds": -1}, {"seconds": float("inf")}, {"weeks": 1e9}],
    ids=["no-period", "zero", "negative", "infinite", "out-of-range"],
)
def test_an_interval_trigger_without_a_usable_period_is_rejected_by_the_model(
    fields: dict[str, float],
) -> None:
    with pytest.raises(ValidationError):
        IntervalTrigger(**fields)


# -- cron ----------------------------------------------------------------------------


def test_a_cron_trigger_with_fields_fires_on_matching_calendar_times() -> None:
    trigger = CronTrigger(day_of_week="mon-fri", hour="9,17", minute=30)

    # 2026-03-28 is a Saturday.
    assert ticks(trigger, NOW, 4) == [
        datetime(2026, 3, 30, 9, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 17, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 9, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 17, 30, tzinfo=UTC),
    ]


def test_a_crontab_expression_fires_like_the_same_cron_fields() -> None:
    expression = CronTrigger(expression="*/20 8-9 * * mon")
    fields = CronTrigger(minute="*/20", hour="8-9", day_of_week="mon")

    expected = [
        datetime(2026, 3, 30, 8, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 8, 20, tzinfo=UTC),
        datetime(2026, 3, 30, 8, 40, tzinfo=UTC),
        datetime(2026, 3, 30, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 9, 20, tzinfo=UTC),
        datetime(2026, 3, 30, 9, 40, tzinfo=UTC),
        datetime(2026, 4, 6, 8, 0, tzinfo=UTC),
    ]
    assert ticks(expression, NOW, 7) == expected
    assert ticks(fields, NOW, 7) == expected


def test_a_cron_trigger_with_seconds_fires_every_matching_second() -> None:
    trigger = CronTrigger(second="*/15")

    assert ticks(trigger, NOW + timedelta(microseconds=1), 3) == [
        NOW + timedelta(seconds=15),
        NOW + timedelta(seconds=30),
        NOW + timedelta(seconds=45),
    ]


def test_a_crontab_expression_respects_its_start_and_end_dates() -> None:
    trigger = CronTrigger(
        expression="0 9 * * *",
        start_date=datetime(2026, 4, 1, tzinfo=UTC),
        end_date=datetime(2026, 4, 3, 12, tzinfo=UTC),
    )

    assert ticks(trigger, NOW, 10) == [
        datetime(2026, 4, 1, 9, tzinfo=UTC),
        datetime(2026, 4, 2, 9, tzinfo=UTC),
        datetime(2026, 4, 3, 9, tzinfo=UTC),
    ]


def test_a_cron_trigger_past_its_end_date_has_no_tick() -> None:
    trigger = CronTrigger(hour=9, end_date=datetime(2026, 1, 1, tzinfo=UTC))

    assert first(trigger) is None


def test_cron_fields_are_read_in_the_trigger_time_zone() -> None:
    trigger = CronTrigger(hour=9, minute=0, timezone="Asia/Tokyo")

    assert first(trigger) == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)


def test_cron_fields_without_a_time_zone_use_the_default_zone() -> None:
    trigger = CronTrigger(hour=9, minute=0)

    assert first(trigger, zone="Asia/Tokyo") == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert first(trigger, zone="UTC") == datetime(2026, 3, 29, 9, 0, tzinfo=UTC)


def test_a_day_of_week_name_in_a_crontab_expression_means_that_day() -> None:
    monday = CronTrigger(expression="0 9 * * mon")

    tick = first(monday)
    assert tick is not None
    assert tick.strftime("%A") == "Monday"


# -- cron across daylight-saving changes ----------------------------------------------


def local_ticks(start: datetime, count: int) -> list[datetime]:
    trigger = CronTrigger(hour=9, minute=0, timezone="Europe/Paris")
    return [tick.astimezone(PARIS) for tick in ticks(trigger, start, count)]


def test_a_daily_cron_job_stays_at_its_local_hour_when_summer_time_starts() -> None:
    # Paris moves from +01:00 to +02:00 at 01:00 UTC on Sunday 29 March 2026.
    local = local_ticks(datetime(2026, 3, 27, 12, tzinfo=UTC), 4)

    assert [t.date().isoformat() for t in local] == [
        "2026-03-28",
        "2026-03-29",
        "2026-03-30",
        "2026-03-31",
    ]
    assert all((t.hour, t.minute) == (9, 0) for t in local)
    assert [t.utcoffset() for t in local] == [
        timedelta(hours=1),
        timedelta(hours=2),
        timedelta(hours=2),
        timedelta(hours=2),
    ]
    assert [t.astimezone(UTC).hour for t in local] == [8, 7, 7, 7]


def test_a_daily_cron_job_stays_at_its_local_hour_when_summer_time_ends() -> None:
    # Paris moves from +02:00 back to +01:00 at 01:00 UTC on Sunday 25 October 2026.
    local = local_ticks(datetime(2026, 10, 23, 12, tzinfo=UTC), 4)

    assert [t.date().isoformat() for t in local] == [
        "2026-10-24",
        "2026-10-25",
        "2026-10-26",
        "2026-10-27",
    ]
    assert all((t.hour, t.minute) == (9, 0) for t in local)
    assert [t.utcoffset() for t in local] == [
        timedelta(hours=2),
        timedelta(hours=1),
        timedelta(hours=1),
        timedelta(hours=1),
    ]
    assert [t.astimezone(UTC).hour for t in local] == [7, 8, 8, 8]


@pytest.mark.parametrize("coalesce", [True, False])
def test_the_tick_after_a_daylight_saving_change_is_at_the_local_hour(coalesce: bool) -> None:
    trigger = CronTrigger(hour=9, minute=0, timezone="Europe/Paris")
    before_spring = datetime(2026, 3, 28, 8, tzinfo=UTC)  # 09:00 +01:00
    before_autumn = datetime(2026, 10, 24, 7, tzinfo=UTC)  # 09:00 +02:00

    assert following(
        trigger, previous=before_spring, now=before_spring, coalesce=coalesce
    ) == datetime(2026, 3, 29, 7, tzinfo=UTC)
    assert following(
        trigger, previous=before_autumn, now=before_autumn, coalesce=coalesce
    ) == datetime(2026, 10, 25, 8, tzinfo=UTC)


# -- date ----------------------------------------------------------------------------


def test_a_date_trigger_fires_once_at_its_run_date() -> None:
    run_date = datetime(2026, 5, 1, 6, 30, tzinfo=UTC)
    trigger = DateTrigger(run_date=run_date)

    assert first(trigger) == run_date
    assert following(trigger, previous=run_date, now=run_date, coalesce=False) is None
    assert following(trigger, previous=run_date, now=run_date, coalesce=True) is None


def test_a_date_trigger_in_the_past_still_reports_its_run_date() -> None:
    run_date = NOW - timedelta(days=3)

    assert first(DateTrigger(run_date=run_date)) == run_date


def test_a_naive_run_date_is_wall_time_in_the_trigger_time_zone() -> None:
    trigger = DateTrigger(run_date=datetime(2026, 7, 14, 9, 0), timezone="Europe/Paris")

    assert first(trigger) == datetime(2026, 7, 14, 7, 0, tzinfo=UTC)


def test_a_naive_run_date_without_a_time_zone_uses_the_default_zone() -> None:
    trigger = DateTrigger(run_date=datetime(2026, 1, 14, 9, 0))

    assert first(trigger, zone="Europe/Paris") == datetime(2026, 1, 14, 8, 0, tzinfo=UTC)


# -- coalescing missed ticks ---------------------------------------------------------


def test_with_coalesce_the_next_tick_is_the_first_after_now_skipping_missed_ones() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = IntervalTrigger(minutes=10, start_date=start)
    late = start + timedelta(minutes=35)

    assert following(trigger, previous=start, now=late, coalesce=True) == start + timedelta(
        minutes=40
    )


def test_without_coalesce_the_next_tick_is_the_one_after_the_previous_tick() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = IntervalTrigger(minutes=10, start_date=start)
    late = start + timedelta(minutes=35)

    assert following(trigger, previous=start, now=late, coalesce=False) == start + timedelta(
        minutes=10
    )


def test_with_coalesce_a_tick_exactly_at_now_is_not_returned_again() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = IntervalTrigger(minutes=10, start_date=start)
    now = start + timedelta(minutes=30)

    assert following(trigger, previous=now, now=now, coalesce=True) == start + timedelta(minutes=40)


@pytest.mark.parametrize(
    ("coalesce", "expected"),
    [(True, datetime(2026, 3, 28, 17, tzinfo=UTC)), (False, datetime(2026, 3, 28, 13, tzinfo=UTC))],
)
def test_a_cron_trigger_coalesces_missed_ticks_only_when_asked(
    coalesce: bool, expected: datetime
) -> None:
    trigger = CronTrigger(minute=0)
    previous = datetime(2026, 3, 28, 12, tzinfo=UTC)
    now = datetime(2026, 3, 28, 16, 30, tzinfo=UTC)

    assert following(trigger, previous=previous, now=now, coalesce=coalesce) == expected


def test_a_next_tick_past_the_largest_representable_time_ends_the_trigger() -> None:
    # 9999-12-31 23:00 in Los Angeles is already year 10000 in UTC.
    trigger = CronTrigger(
        year="2026,9999", month=12, day=31, hour=23, minute=0, timezone="America/Los_Angeles"
    )
    last = datetime(2027, 1, 1, 7, 0, tzinfo=UTC)

    assert first(trigger) == last
    assert following(trigger, previous=last, now=last, coalesce=True) is None
    assert following(trigger, previous=last, now=last, coalesce=False) is None


# -- normalize_trigger ---------------------------------------------------------------


def test_normalizing_pins_an_interval_start_to_one_period_after_now() -> None:
    pinned = normalize_trigger(IntervalTrigger(seconds=30), default_zone="UTC", now=NOW)

    assert isinstance(pinned, IntervalTrigger)
    assert pinned.start_date == NOW + timedelta(seconds=30)
    assert first(pinned, NOW) == NOW + timedelta(seconds=30)


def test_a_pinned_interval_keeps_one_grid_whoever_computes_its_ticks_later() -> None:
    pinned = normalize_trigger(IntervalTrigger(seconds=30), default_zone="UTC", now=NOW)
    later = NOW + timedelta(minutes=7, seconds=4)

    # Another process asking later gets a tick on the same grid, not "later + 30 s".
    assert first(pinned, later) == NOW + timedelta(minutes=7, seconds=30)


def test_normalizing_pins_a_date_trigger_without_run_date_to_now() -> None:
    pinned = normalize_trigger(DateTrigger(), default_zone="UTC", now=NOW)

    assert isinstance(pinned, DateTrigger)
    assert pinned.run_date == NOW
    assert first(pinned, NOW + timedelta(seconds=5)) == NOW


def test_normalizing_keeps_dates_that_were_given_and_leaves_cron_alone() -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    interval = IntervalTrigger(seconds=30, start_date=start)
    date = DateTrigger(run_date=start)
    cron = CronTrigger(hour=3)

    assert normalize_trigger(interval, default_zone="UTC", now=NOW) == interval
    assert normalize_trigger(date, default_zone="UTC", now=NOW) == date
    assert normalize_trigger(cron, default_zone="UTC", now=NOW) == cron


# -- invalid triggers, at the layer --------------------------------------------------

INVALID_CRON: list[dict[str, Any]] = [
    {"hour": "25"},
    {"minute": "*/0"},
    {"day_of_week": "funday"},
    {"month": 0},
    {"second": "1-"},
    {"hour": "5-2"},
    {"expression": "* * *"},
    {"expression": "61 * * * *"},
    {"expression": "* * * * * *"},
    {"expression": ""},
]


@pytest.mark.parametrize("fields", INVALID_CRON, ids=lambda fields: repr(fields))
def test_an_invalid_cron_definition_is_refused_when_built_or_by_the_scheduler(
    fields: dict[str, Any],
) -> None:
    try:
        trigger = CronTrigger(**fields)
    except ValidationError as error:  # numbers out of range, the wrong count of fields
        assert "cron" in str(error).lower()
        return
    with pytest.raises(InvalidTriggerError, match="invalid cron trigger"):
        normalize_trigger(trigger, default_zone="UTC", now=NOW)


@pytest.mark.parametrize(
    "trigger",
    [
        IntervalTrigger(seconds=5, timezone="Mars/Olympus"),
        CronTrigger(hour=1, timezone="Mars/Olympus"),
        DateTrigger(timezone="Mars/Olympus"),
        CronTrigger(hour=1, timezone="../../etc/passwd"),
    ],
    ids=["interval", "cron", "date", "path"],
)
def test_an_unknown_time_zone_raises_invalid_trigger_error(trigger: Trigger) -> None:
    with pytest.raises(InvalidTriggerError, match="unknown time zone"):
        normalize_trigger(trigger, default_zone="UTC", now=NOW)


def test_an_unknown_default_zone_raises_invalid_trigger_error() -> None:
    with pytest.raises(InvalidTriggerError, match="unknown time zone 'Nowhere/City'"):
        first(CronTrigger(hour=1), zone="Nowhere/City")


def test_a_cron_trigger_with_both_an_expression_and_fields_is_rejected_by_the_model() -> None:
    with pytest.raises(ValidationError, match="either a crontab expression or cron fields"):
        CronTrigger(expression="0 9 * * *", hour=9)


def test_a_trigger_model_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        CronTrigger.model_validate({"hours": 9})


# -- invalid triggers, through the public API ----------------------------------------


@pytest.fixture
async def sqlite_poller(tmp_path: Path) -> AsyncIterator[JobPoller]:
    """A started poller on a throwaway SQLite file with one job function registered."""
    poller = JobPoller(
        **FAST_SETTINGS,
        database_url=f"sqlite:///{tmp_path}/triggers.db",
        table_prefix=f"t{uuid.uuid4().hex[:10]}_",
    )

    @poller.job_function()
    def tick() -> None:
        return None

    async with poller:
        yield poller


# Models that build (their numbers are in range) but that APScheduler refuses; models
# with numbers out of range are refused when built (tests/package/test_everyday_mistakes).
INVALID_TRIGGERS: list[Trigger | Mapping[str, Any]] = [
    CronTrigger(day_of_week="mnday"),
    CronTrigger(expression="0 9 * * funday"),
    CronTrigger(hour=9, timezone="Mars/Olympus"),
    IntervalTrigger(seconds=1, timezone="Mars/Olympus"),
    DateTrigger(timezone="Mars/Olympus"),
    DateTrigger(run_date=datetime(9999, 12, 31, 23, 0), timezone="America/Los_Angeles"),
    {"type": "cron", "hour": "25"},
    {"type": "cron", "expression": "bad expression"},
    {"type": "cron", "expression": "0 9 * *"},
    {"type": "cron", "expression": "0 9 * * *", "hour": 9},
    {"type": "cron", "minute": 0, "timezone": "Mars/Olympus"},
    {"type": "interval"},
    {"type": "interval", "seconds": -5},
    {"type": "interval", "seconds": "soon"},
    {"type": "date", "run_date": "not a date"},
    {"type": "date", "run_date": "9999-12-31T23:59:59", "timezone": "Pacific/Honolulu"},
    {"type": "weekly", "day": "monday"},
    {"seconds": 5},
    {"type": "interval", "seconds": 5, "colour": "blue"},
    {},
]


@pytest.mark.anyio
@pytest.mark.parametrize("trigger", INVALID_TRIGGERS, ids=lambda trigger: repr(trigger))
async def test_add_job_raises_invalid_trigger_error_for_every_invalid_trigger(
    sqlite_poller: JobPoller, trigger: Trigger | Mapping[str, Any]
) -> None:
    with pytest.raises(InvalidTriggerError):
        await sqlite_poller.add_job("tick", trigger)

    assert await sqlite_poller.list_jobs() == []


@pytest.mark.anyio
@pytest.mark.parametrize("trigger", INVALID_TRIGGERS, ids=lambda trigger: repr(trigger))
async def test_reschedule_job_raises_invalid_trigger_error_and_keeps_the_old_trigger(
    sqlite_poller: JobPoller, trigger: Trigger | Mapping[str, Any]
) -> None:
    job = await sqlite_poller.add_job("tick", IntervalTrigger(hours=1), job_id="hourly")

    with pytest.raises(InvalidTriggerError):
        await sqlite_poller.reschedule_job("hourly", trigger)

    assert await sqlite_poller.get_job("hourly") == job


@pytest.mark.anyio
async def test_add_job_accepts_a_valid_trigger_given_as_a_dict(sqlite_poller: JobPoller) -> None:
    job = await sqlite_poller.add_job(
        "tick", {"type": "cron", "expression": "0 9 * * *", "timezone": "Europe/Paris"}
    )

    assert job.trigger == CronTrigger(expression="0 9 * * *", timezone="Europe/Paris")
    assert job.next_run_at is not None
    assert job.next_run_at.astimezone(PARIS).time().isoformat() == "09:00:00"
