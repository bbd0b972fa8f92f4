"""The one module that imports APScheduler: its triggers compute every fire time.

Our trigger models (`IntervalTrigger`, `CronTrigger`, `DateTrigger` in `models.py`) are
plain JSON; this module turns them into APScheduler 3 trigger objects, translates their
errors into `InvalidTriggerError`, and answers "when is the next tick?". APScheduler's
own scheduler loop and job stores are not used: see docs/architecture.md for why.
"""

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger as _ApsCron
from apscheduler.triggers.date import DateTrigger as _ApsDate
from apscheduler.triggers.interval import IntervalTrigger as _ApsInterval

from .exceptions import InvalidTriggerError
from .models import CronTrigger, DateTrigger, IntervalTrigger, Trigger

__all__ = ["first_fire_time", "next_fire_time", "normalize_trigger"]

_ONE_MICROSECOND = timedelta(microseconds=1)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTriggerError(f"unknown time zone {name!r}") from None


def _aware(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """Read a naive datetime as wall time in `zone`; keep an aware one as it is."""
    if value is None:
        return None
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


@lru_cache(maxsize=4096)
def _build(trigger: Trigger, default_zone: str) -> Any:
    zone = _zone(trigger.timezone or default_zone)
    try:
        if isinstance(trigger, IntervalTrigger):
            return _ApsInterval(
                weeks=trigger.weeks,
                days=trigger.days,
                hours=trigger.hours,
                minutes=trigger.minutes,
                seconds=trigger.seconds,
                start_date=_aware(trigger.start_date, zone),
                end_date=_aware(trigger.end_date, zone),
                timezone=zone,
                jitter=trigger.jitter,
            )
        if isinstance(trigger, CronTrigger):
            if trigger.expression is not None:
                built = _ApsCron.from_crontab(trigger.expression, timezone=zone)
                built.jitter = trigger.jitter
                if trigger.start_date or trigger.end_date:
                    built.start_date = _aware(trigger.start_date, zone)
                    built.end_date = _aware(trigger.end_date, zone)
                return built
            return _ApsCron(
                year=trigger.year,
                month=trigger.month,
                day=trigger.day,
                week=trigger.week,
                day_of_week=trigger.day_of_week,
                hour=trigger.hour,
                minute=trigger.minute,
                second=trigger.second,
                start_date=_aware(trigger.start_date, zone),
                end_date=_aware(trigger.end_date, zone),
                timezone=zone,
                jitter=trigger.jitter,
            )
        return _ApsDate(run_date=_aware(trigger.run_date, zone), timezone=zone)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidTriggerError(f"invalid {trigger.type} trigger: {exc}") from None


def normalize_trigger(trigger: Trigger, *, default_zone: str, now: datetime) -> Trigger:
    """Pin what APScheduler would take from the clock, so every process agrees.

    An interval trigger without `start_date` starts one period after `now`, a date
    trigger without `run_date` runs at `now`; both are stored with the pinned value.

    Raises:
        InvalidTriggerError: APScheduler rejects the definition.
    """
    if isinstance(trigger, IntervalTrigger) and trigger.start_date is None:
        start = now + timedelta(seconds=trigger.period_seconds)
        trigger = trigger.model_copy(update={"start_date": start})
    elif isinstance(trigger, DateTrigger) and trigger.run_date is None:
        trigger = trigger.model_copy(update={"run_date": now})
    _build(trigger, default_zone)
    return trigger


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def first_fire_time(trigger: Trigger, *, default_zone: str, now: datetime) -> datetime | None:
    """Return the first tick at or after `now` (UTC), or None if there is none."""
    built = _build(trigger, default_zone)
    if isinstance(trigger, DateTrigger):
        return _utc(built.get_next_fire_time(None, now))
    return _utc(built.get_next_fire_time(None, now.astimezone(built.timezone)))


def next_fire_time(
    trigger: Trigger,
    *,
    default_zone: str,
    previous: datetime,
    now: datetime,
    coalesce: bool,
) -> datetime | None:
    """Return the tick after `previous`; with `coalesce`, the first one after `now`.

    A date trigger fires once, so its next tick is always None.
    """
    if isinstance(trigger, DateTrigger):
        return None
    built = _build(trigger, default_zone)
    zone = built.timezone
    if coalesce:
        return _utc(built.get_next_fire_time(None, (now + _ONE_MICROSECOND).astimezone(zone)))
    return _utc(built.get_next_fire_time(previous.astimezone(zone), now.astimezone(zone)))
