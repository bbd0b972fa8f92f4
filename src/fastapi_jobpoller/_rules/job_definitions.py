"""Whether a job definition is acceptable, and whether two definitions are the same."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..exceptions import InvalidTriggerError
from ..models import JobInfo
from ..triggers import TRIGGER_ADAPTER, DateTrigger, IntervalTrigger, Trigger

__all__ = [
    "DateInPastError",
    "refuse_a_missed_date",
    "same_definition",
    "same_schedule",
    "validated_trigger",
]


def same_schedule(stored: Trigger | None, declared: Trigger) -> bool:
    """Compare triggers, ignoring a start the declaration left to be pinned when added."""
    if stored is None:
        return False
    ignored: set[str] = set()
    if isinstance(declared, IntervalTrigger) and declared.start_date is None:
        ignored.add("start_date")
    if isinstance(declared, DateTrigger) and declared.run_date is None:
        ignored.add("run_date")
    return stored.model_dump(exclude=ignored) == declared.model_dump(exclude=ignored)


class DateInPastError(InvalidTriggerError):
    """A date trigger's only tick is older than its misfire grace time: it would be missed."""


def refuse_a_missed_date(run_date: datetime, now: datetime, grace: float) -> None:
    """Refuse a date trigger whose only tick could only be recorded missed."""
    late = (now - run_date).total_seconds()
    if late > grace:
        raise DateInPastError(
            f"invalid date trigger: its run_date {run_date.isoformat()} is {late:,.0f} s in "
            f"the past, more than misfire_grace_time ({grace:g} s): the run would only be "
            "recorded as missed; give a future run_date, or none to run it now"
        )


def validated_trigger(trigger: Trigger | Mapping[str, Any]) -> Trigger:
    """Return the trigger model, or raise `InvalidTriggerError` saying what to write."""
    if isinstance(trigger, str):
        kind = trigger if trigger in ("interval", "cron", "date") else "interval"
        example = {
            "interval": "IntervalTrigger(seconds=30)",
            "cron": "CronTrigger(hour=2, minute=30)",
            "date": "DateTrigger(run_date=...)",
        }[kind]
        raise InvalidTriggerError(
            f"a trigger is an object, not the name {trigger!r}: write {example}, or its JSON "
            f"form {{'type': '{kind}', ...}}; see docs/migration.md"
        )
    try:
        return TRIGGER_ADAPTER.validate_python(trigger)
    except ValidationError as exc:
        raise InvalidTriggerError(f"invalid trigger: {exc}") from None


def same_definition(
    existing: JobInfo,
    function: str,
    arguments: Mapping[str, Any],
    trigger: Trigger,
    limits: Mapping[str, Any],
) -> bool:
    """Return whether a stored job is what a declaration or an `add_job` asks for."""
    return (
        existing.function == function
        and existing.arguments == arguments
        and same_schedule(existing.trigger, trigger)
        and all(getattr(existing, key) == value for key, value in limits.items())
    )
