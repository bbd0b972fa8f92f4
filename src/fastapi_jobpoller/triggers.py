"""Trigger models: when a scheduled job fires (interval, cron or a single date).

They only describe a schedule; `_apscheduler.py` computes the fire times from them.
"""

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

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


CronField = int | str | None


class CronTrigger(_TriggerBase):
    """Fire on calendar fields, APScheduler style, or from a crontab `expression`.

    Day-of-week names (`mon-fri`) mean the same everywhere; APScheduler's numbers
    start at Monday=0, unlike crontab's Sunday=0, so prefer names.
    """

    type: Literal["cron"] = "cron"
    expression: str | None = Field(
        default=None, max_length=200, description="Five-field crontab expression."
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
        return self


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
