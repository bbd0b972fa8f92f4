"""Calendar rules of cron triggers, computed by the trigger code every process uses
(`_apscheduler.py`): clock changes, and which day a day number means.

When clocks go back, a fixed-hour job fires once, in the first pass of the repeated hour;
an hourly one fires every elapsed hour. When clocks go forward past its time, it fires
once, at its wall time shifted by the change.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fastapi_jobpoller import CronTrigger
from fastapi_jobpoller._apscheduler import first_fire_time, latest_due_tick, next_fire_time


def ticks(trigger: CronTrigger, start: datetime, count: int, *, coalesce: bool) -> list[str]:
    """Return `count` ticks from `start`, as local wall times with their UTC offset."""
    tick = first_fire_time(trigger, default_zone="UTC", now=start)
    found: list[datetime] = []
    while tick is not None and len(found) < count:
        found.append(tick)
        tick = next_fire_time(
            trigger, default_zone="UTC", previous=tick, now=tick, coalesce=coalesce
        )
    zone = ZoneInfo(str(trigger.timezone))
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in found]


FALL_BACK = [
    # zone, hour, minute, a moment the day before, the three ticks expected
    ("Europe/Paris", 2, 30, datetime(2024, 10, 26, 12, tzinfo=UTC),
     ["10-27 02:30+0200", "10-28 02:30+0100", "10-29 02:30+0100"]),
    ("America/New_York", 1, 30, datetime(2024, 11, 2, 12, tzinfo=UTC),
     ["11-03 01:30-0400", "11-04 01:30-0500", "11-05 01:30-0500"]),
    # Lord Howe turns its clocks back half an hour: 01:30 to 02:00 happens twice.
    ("Australia/Lord_Howe", 1, 45, datetime(2024, 4, 6, 0, tzinfo=UTC),
     ["04-07 01:45+1100", "04-08 01:45+1030", "04-09 01:45+1030"]),
]  # fmt: skip

SPRING_FORWARD = [
    ("Europe/Paris", 2, 30, datetime(2024, 3, 30, 12, tzinfo=UTC),
     ["03-31 03:30+0200", "04-01 02:30+0200", "04-02 02:30+0200"]),
    ("America/New_York", 2, 30, datetime(2024, 3, 9, 12, tzinfo=UTC),
     ["03-10 03:30-0400", "03-11 02:30-0400", "03-12 02:30-0400"]),
    # Lord Howe skips 02:00 to 02:30.
    ("Australia/Lord_Howe", 2, 15, datetime(2024, 10, 5, 0, tzinfo=UTC),
     ["10-06 02:45+1100", "10-07 02:15+1100", "10-08 02:15+1100"]),
]  # fmt: skip


@pytest.mark.parametrize("coalesce", [False, True])
@pytest.mark.parametrize(("zone", "hour", "minute", "start", "expected"), FALL_BACK)
def test_a_fixed_hour_job_fires_once_on_the_night_clocks_go_back(
    zone: str, hour: int, minute: int, start: datetime, expected: list[str], coalesce: bool
) -> None:
    trigger = CronTrigger(hour=hour, minute=minute, timezone=zone)
    assert ticks(trigger, start, 3, coalesce=coalesce) == expected


@pytest.mark.parametrize(("zone", "hour", "minute", "start", "expected"), SPRING_FORWARD)
def test_a_job_in_the_skipped_hour_fires_once_shifted_by_the_change(
    zone: str, hour: int, minute: int, start: datetime, expected: list[str]
) -> None:
    trigger = CronTrigger(hour=hour, minute=minute, timezone=zone)
    assert ticks(trigger, start, 3, coalesce=False) == expected


def test_an_hourly_job_fires_every_elapsed_hour_through_the_repeated_one() -> None:
    trigger = CronTrigger(minute=15, timezone="Europe/Paris")
    start = datetime(2024, 10, 27, 0, 0, tzinfo=UTC)  # 02:00 CEST, the repeated hour next
    assert ticks(trigger, start, 4, coalesce=False) == [
        "10-27 02:15+0200",
        "10-27 02:15+0100",
        "10-27 03:15+0100",
        "10-27 04:15+0100",
    ]


def test_a_crontab_expression_at_a_fixed_hour_fires_once_when_clocks_go_back() -> None:
    trigger = CronTrigger(expression="30 2 * * *", timezone="Europe/Paris")
    start = datetime(2024, 10, 26, 12, tzinfo=UTC)
    assert ticks(trigger, start, 2, coalesce=False) == ["10-27 02:30+0200", "10-28 02:30+0100"]


def test_catching_up_across_the_repeated_hour_runs_the_job_once() -> None:
    """A coalescing job down during the whole night runs once for it, and then not again
    at the repeated 02:30."""
    trigger = CronTrigger(hour=2, minute=30, timezone="Europe/Paris")
    first = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 CEST
    now = first + timedelta(hours=1, minutes=10)  # after the repeated 02:30 CET too
    latest = latest_due_tick(trigger, default_zone="UTC", scheduled=first, now=now)
    following = next_fire_time(trigger, default_zone="UTC", previous=latest, now=now, coalesce=True)
    assert following == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("trigger", "weekday"),
    [
        (CronTrigger(expression="0 9 * * 0", timezone="UTC"), "Sunday"),
        (CronTrigger(expression="0 9 * * 7", timezone="UTC"), "Sunday"),
        (CronTrigger(expression="0 9 * * 1", timezone="UTC"), "Monday"),
        (CronTrigger(day_of_week=0, hour=9, timezone="UTC"), "Monday"),
        (CronTrigger(day_of_week="sun", hour=9, timezone="UTC"), "Sunday"),
    ],
)
def test_crontab_expressions_count_days_from_sunday_and_the_field_from_monday(
    trigger: CronTrigger, weekday: str
) -> None:
    """As docs/getting-started.md says: "0 9 * * 0" fires on Sundays."""
    tick = first_fire_time(trigger, default_zone="UTC", now=datetime(2024, 5, 1, tzinfo=UTC))
    assert tick is not None and tick.strftime("%A %H:%M") == f"{weekday} 09:00"


def test_a_job_resumed_between_the_two_passes_does_not_fire_in_the_second() -> None:
    """Resumed (or added) at 02:10 CET, after 02:30 CEST fired: its first tick is the next
    night's, not the repeated 02:30."""
    trigger = CronTrigger(hour=2, minute=30, timezone="Europe/Paris")
    resumed = datetime(2024, 10, 27, 1, 10, tzinfo=UTC)  # 02:10 CET, the second pass
    first = first_fire_time(trigger, default_zone="UTC", now=resumed)
    assert first == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("every_hour", ["*/1", "0-23"])
def test_an_hour_field_matching_every_hour_keeps_the_repeated_hour(every_hour: str) -> None:
    trigger = CronTrigger(hour=every_hour, minute=15, timezone="Europe/Paris")
    start = datetime(2024, 10, 27, 0, 0, tzinfo=UTC)
    assert ticks(trigger, start, 3, coalesce=False) == [
        "10-27 02:15+0200",
        "10-27 02:15+0100",
        "10-27 03:15+0100",
    ]
