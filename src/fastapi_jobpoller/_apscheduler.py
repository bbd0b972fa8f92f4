"""The one module that imports APScheduler: its triggers compute every fire time.

Our trigger models (`IntervalTrigger`, `CronTrigger`, `DateTrigger` in `triggers.py`) are
plain JSON; this module turns them into APScheduler 3 trigger objects, translates their
errors into `InvalidTriggerError`, and answers "when is the next tick?". APScheduler's
own scheduler loop and job stores are not used: see docs/migration.md for why.
"""

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger as _ApsCron
from apscheduler.triggers.date import DateTrigger as _ApsDate
from apscheduler.triggers.interval import IntervalTrigger as _ApsInterval

from .exceptions import InvalidTriggerError
from .triggers import CronTrigger, DateTrigger, IntervalTrigger, Trigger

__all__ = [
    "check_trigger",
    "first_fire_time",
    "latest_due_tick",
    "next_fire_time",
    "normalize_trigger",
]

_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
# Any day will do: to ask a cron hour field which hours it matches.
_A_DAY = datetime(2000, 1, 3)
# How many missed cron ticks are stepped through to find the latest one; past that, the
# one reached is used (a cron firing every second, down for three hours).
_MAX_TICKS_STEPPED = 10_000
_CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


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
                fields = trigger.expression.split()
                if len(fields) != 5:
                    raise ValueError(f"a crontab expression has 5 fields, not {len(fields)}")
                minute, hour, day, month, weekdays = fields
                return _ApsCron(
                    minute=minute,
                    hour=hour,
                    day=day,
                    month=month,
                    day_of_week=_crontab_weekdays(weekdays),
                    start_date=_aware(trigger.start_date, zone),
                    end_date=_aware(trigger.end_date, zone),
                    timezone=zone,
                    jitter=trigger.jitter,
                )
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
        reason = _failing_cron_field(trigger) if isinstance(trigger, CronTrigger) else None
        raise InvalidTriggerError(f"invalid {trigger.type} trigger: {reason or exc}") from None


def _failing_cron_field(trigger: CronTrigger) -> str | None:
    """Name the field APScheduler refused, and why (its own message names neither)."""
    if trigger.expression is not None:
        names = ("minute", "hour", "day", "month", "day_of_week")
        given = dict(zip(names, trigger.expression.split(), strict=False))
        given["day_of_week"] = _crontab_weekdays(given["day_of_week"])
    else:
        given = {name: getattr(trigger, name) for name in _CRON_FIELDS}
    for name, value in given.items():
        if value is None:
            continue
        try:
            _ApsCron(**{name: value}, timezone=UTC)
        except (ValueError, TypeError, KeyError) as exc:
            return f"{name}={value!r}: {exc}"
    return None


def check_trigger(trigger: Trigger, *, default_zone: str) -> None:
    """Check that APScheduler accepts the trigger (fields, names, time zone).

    Raises:
        InvalidTriggerError: It does not; the message names the field.
    """
    _build(trigger, default_zone)


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
    if first_fire_time(trigger, default_zone=default_zone, now=now) is None:
        raise InvalidTriggerError(
            f"invalid {trigger.type} trigger: it never fires after now (an impossible date, "
            "an end date in the past, or a first tick beyond the year 9999)"
        )
    return trigger


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def first_fire_time(trigger: Trigger, *, default_zone: str, now: datetime) -> datetime | None:
    """Return the first tick at or after `now` (UTC), or None if there is none."""
    built = _build(trigger, default_zone)
    try:
        if isinstance(trigger, DateTrigger):
            return _utc(built.get_next_fire_time(None, now))
        zone = built.timezone
        first = built.get_next_fire_time(None, now.astimezone(zone))
        return _utc(_after_the_repeated_pass(built, first, zone))
    except OverflowError:  # the tick cannot be held in a datetime: there is none
        return None


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
    try:
        if coalesce:
            following = built.get_next_fire_time(None, (now + _ONE_MICROSECOND).astimezone(zone))
        else:
            following = built.get_next_fire_time(previous.astimezone(zone), now.astimezone(zone))
        return _utc(_after_the_repeated_pass(built, following, zone))
    except OverflowError:
        # The next tick cannot be held in a datetime: the trigger has ended. Raising
        # instead would fail every claim of due ticks, for every job, again and again.
        return None


def _after_the_repeated_pass(built: Any, tick: datetime | None, zone: ZoneInfo) -> datetime | None:
    """Return `tick`, or the first tick after it that does not repeat a wall-clock time of
    the first pass of an autumn change (see `_fired_already_tonight`)."""
    # At most one repeated hour a night: one step past it is enough, two for safety.
    for _ in range(2):
        if tick is None or not _fired_already_tonight(built, tick, zone):
            break
        # From a second later, through UTC: wall-time arithmetic would not leave it.
        later = (tick.astimezone(UTC) + _ONE_SECOND).astimezone(zone)
        tick = built.get_next_fire_time(tick, later)
    return tick


def _fired_already_tonight(built: Any, tick: datetime, zone: ZoneInfo) -> bool:
    """Return whether `tick` repeats a wall-clock time of the autumn change's first pass.

    When clocks go back, an hour of wall time happens twice. A cron job at fixed hours
    (02:30) fires in the first pass only, as cron does; one whose hour field matches every
    hour (`*`, `*/1`, `0-23`) fires every hour of elapsed time, the repeated one included.
    """
    if not isinstance(built, _ApsCron):
        return False
    local = tick.astimezone(UTC).astimezone(zone)  # through UTC: sets `fold` right
    if not local.fold:
        return False
    hour = next(field for field in built.fields if field.name == "hour")
    every_hour = all(hour.get_next_value(_A_DAY.replace(hour=h)) == h for h in range(24))
    return not every_hour


def latest_due_tick(
    trigger: Trigger, *, default_zone: str, scheduled: datetime, now: datetime
) -> datetime:
    """Return the last tick at or before `now`, starting from the due tick `scheduled`.

    Coalescing runs a job once for all the ticks it missed; like APScheduler, that run
    stands for the latest of them, so its lateness (and the misfire check) counts from
    there rather than from the first tick missed.
    """
    if isinstance(trigger, DateTrigger) or now <= scheduled:
        return scheduled
    if isinstance(trigger, IntervalTrigger) and not trigger.jitter:
        period = timedelta(seconds=trigger.period_seconds)
        latest = scheduled + period * ((now - scheduled) // period)
        end = trigger.end_date
        if end is not None and end.tzinfo is not None and latest > end:
            return scheduled
        return latest
    built = _build(trigger, default_zone)
    zone = built.timezone
    latest = scheduled
    for _ in range(_MAX_TICKS_STEPPED):
        try:
            following = built.get_next_fire_time(latest.astimezone(zone), now.astimezone(zone))
        except OverflowError:
            break
        if following is None or following > now:
            break
        latest = following.astimezone(UTC)
    return latest


def _crontab_weekdays(field: str) -> str:
    """Translate crontab's day-of-week numbers (0 or 7 = Sunday) into day names.

    APScheduler 3 numbers days from Monday=0, so `0 9 * * 1` would silently mean
    Tuesday; names mean the same to both.
    """
    if field == "*" or not any(ch.isdigit() for ch in field):
        return field
    days: list[str] = []
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            first, last = _weekday_number(start_text), _weekday_number(end_text)
        else:
            first = last = _weekday_number(base)
            if step_text:
                last = 6
        if step < 1 or first > last:
            raise InvalidTriggerError(f"invalid day-of-week field {field!r} in crontab")
        days.extend(_CRONTAB_WEEKDAYS[n] for n in range(first, last + 1, step))
    return ",".join(dict.fromkeys(days))


def _weekday_number(text: str) -> int:
    names = {name: number for number, name in enumerate(_CRONTAB_WEEKDAYS[:7])}
    if text.lower() in names:
        return names[text.lower()]
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise InvalidTriggerError(f"invalid day of week {text!r} in crontab expression")
