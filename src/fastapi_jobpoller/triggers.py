"""Trigger models: when a scheduled job fires (interval, cron or a single date).

They only describe a schedule; `_apscheduler.py` computes the fire times from them.
"""

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

__all__ = ["TRIGGER_ADAPTER", "CronTrigger", "DateTrigger", "IntervalTrigger", "Trigger"]


# Shortest interval period: APScheduler rounds anything under a microsecond to a second.
_MIN_PERIOD_SECONDS = 0.001


def _finite(value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")


class _TriggerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str | None = Field(
        default=None, min_length=1, max_length=64, description="IANA zone, e.g. Europe/Paris."
    )
    jitter: float | None = Field(default=None, ge=0, le=3600)

    @field_validator("timezone")
    @classmethod
    def _portable_zone(cls, value: str | None) -> str | None:
        # "localtime" names whatever zone each host is set to: processes on two hosts
        # would compute different ticks for one job.
        if value is not None and value.lower() == "localtime":
            raise ValueError("name an IANA zone such as 'Europe/Paris', not 'localtime'")
        return value


class IntervalTrigger(_TriggerBase):
    """Fire every fixed period, from `start_date` (default: when the job is added)."""

    type: Literal["interval"] = "interval"
    weeks: float = Field(default=0, ge=0)
    days: float = Field(default=0, ge=0)
    hours: float = Field(default=0, ge=0)
    minutes: float = Field(default=0, ge=0)
    seconds: float = Field(default=0, ge=0)
    start_date: datetime | None = None
    end_date: datetime | None = None

    @model_validator(mode="after")
    def _positive_period(self) -> "IntervalTrigger":
        for value in (self.weeks, self.days, self.hours, self.minutes, self.seconds):
            _finite(value)
        if self.period_seconds < _MIN_PERIOD_SECONDS:
            raise ValueError(
                f"an interval trigger needs a period of {_MIN_PERIOD_SECONDS} s or more"
            )
        if self.period_seconds > 366 * 86_400 * 100:
            raise ValueError("an interval trigger's period is out of range")
        return self

    @property
    def period_seconds(self) -> float:
        """Return the period in seconds."""
        return (
            self.weeks * 604_800
            + self.days * 86_400
            + self.hours * 3600
            + self.minutes * 60
            + self.seconds
        )


# Longest cron field or crontab expression: far more than any real one (every minute of
# an hour listed one by one is 170 characters), and cheap to parse.
_MAX_CRON_TEXT = 200
CronField = int | Annotated[str, StringConstraints(min_length=1, max_length=_MAX_CRON_TEXT)] | None
# The range of each cron field, for the numbers in it (names and `last` are checked when
# the job is declared or added).
_CRON_RANGES = {
    "year": (1970, 9999),
    "month": (1, 12),
    "day": (1, 31),
    "week": (1, 53),
    "day_of_week": (0, 6),
    "hour": (0, 23),
    "minute": (0, 59),
    "second": (0, 59),
}
# A number, a range of numbers or `*`, with an optional step: the forms checked here.
_NUMERIC_PART = re.compile(r"^(?:\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")
_POSITIONAL = (
    "CronTrigger takes named fields, e.g. CronTrigger(hour=2, minute=30); for a crontab "
    "line write CronTrigger.from_crontab({line!r}) (or CronTrigger(expression={line!r}))"
)


# A crontab expression's fields, in order; its day of week runs from 0 to 7 (both Sunday).
_CRONTAB_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRONTAB_RANGES = {**_CRON_RANGES, "day_of_week": (0, 7)}


def _check_cron_field(
    name: str, value: int | str, ranges: dict[str, tuple[int, int]] = _CRON_RANGES
) -> None:
    """Refuse a number outside the field's range, naming the field and its range."""
    low, high = ranges[name]
    numbers: list[int] = []
    if isinstance(value, int):
        numbers = [value]
    else:
        for part in value.replace(" ", "").split(","):
            matched = _NUMERIC_PART.match(part)
            if matched is None:
                continue  # names (mon, jan), last, 2nd fri: APScheduler checks them
            start, end, step = matched.groups()
            numbers += [int(n) for n in (start, end) if n is not None]
            if step is not None and int(step) == 0:
                raise ValueError(f"{name}={value!r}: a step of 0 never moves")
    for number in numbers:
        if not low <= number <= high:
            raise ValueError(f"{name}={value!r} is out of range: {name} runs from {low} to {high}")


class CronTrigger(_TriggerBase):
    """Fire on calendar fields, APScheduler style, or from a crontab `expression`.

    Day-of-week names (`mon-fri`) mean the same everywhere; APScheduler's numbers
    start at Monday=0, unlike crontab's Sunday=0, so prefer names.
    """

    type: Literal["cron"] = "cron"
    expression: str | None = Field(
        default=None, max_length=_MAX_CRON_TEXT, description="Five-field crontab expression."
    )
    year: CronField = None
    month: CronField = None
    day: CronField = None
    week: CronField = None
    day_of_week: CronField = None
    hour: CronField = None
    minute: CronField = None
    second: CronField = None
    start_date: datetime | None = None
    end_date: datetime | None = None

    @model_validator(mode="after")
    def _expression_or_fields(self) -> "CronTrigger":
        fields = (
            self.year,
            self.month,
            self.day,
            self.week,
            self.day_of_week,
            self.hour,
            self.minute,
            self.second,
        )
        if self.expression is not None and any(f is not None for f in fields):
            raise ValueError("give either a crontab expression or cron fields, not both")
        if self.expression is not None:
            parts = self.expression.split()
            if len(parts) != len(_CRONTAB_FIELDS):
                raise ValueError(
                    f"expression={self.expression!r}: a crontab expression has 5 fields "
                    "(minute hour day month day-of-week)"
                )
            for name, part in zip(_CRONTAB_FIELDS, parts, strict=True):
                _check_cron_field(name, part, _CRONTAB_RANGES)
        for name in _CRON_RANGES:
            value = getattr(self, name)
            if value is not None:
                _check_cron_field(name, value)
        return self

    @classmethod
    def from_crontab(
        cls, expression: str, timezone: str | None = None, **fields: Any
    ) -> "CronTrigger":
        """Build a trigger from a crontab line, as APScheduler's method of that name does.

        `CronTrigger.from_crontab("30 2 * * *", timezone="Europe/Paris")`; other fields
        (`jitter`, `start_date`, `end_date`) by name.
        """
        return cls(expression=expression, timezone=timezone, **fields)

    if not TYPE_CHECKING:  # type checkers keep pydantic's own signature

        def __init__(self, *args: Any, **data: Any) -> None:
            if args:
                line = args[0] if isinstance(args[0], str) else "30 2 * * *"
                raise TypeError(_POSITIONAL.format(line=line))
            super().__init__(**data)


class DateTrigger(_TriggerBase):
    """Fire once at `run_date` (default: now, i.e. run as soon as possible)."""

    type: Literal["date"] = "date"
    run_date: datetime | None = None

    @model_validator(mode="after")
    def _no_jitter(self) -> "DateTrigger":
        if self.jitter:
            raise ValueError("a date trigger fires at its run_date; jitter does not apply")
        return self


Trigger = Annotated[IntervalTrigger | CronTrigger | DateTrigger, Field(discriminator="type")]

TRIGGER_ADAPTER: TypeAdapter[Trigger] = TypeAdapter(Trigger)
"""Validates a trigger given as a model or as its JSON form (a dict with `type`)."""
