"""Whether the engine can use a stored row: the checks behind quarantine.

Rows reach the database through the API, which validates them, but also through a
downgrade, a time-zone database that differs between hosts, a manual edit or a bug. A row
that fails these checks is set aside by itself instead of failing every claim it is in.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .._apscheduler import first_fire_time
from ..triggers import TRIGGER_ADAPTER

__all__ = ["describe_error", "job_problem", "poll_problem"]

# Longest reason stored: enough for pydantic's first complaint about a value.
_MAX_REASON_CHARS = 500


def describe_error(error: BaseException) -> str:
    """Return a short description of why a stored value was refused."""
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        text = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    else:
        text = str(error) or type(error).__name__
    return text[:_MAX_REASON_CHARS]


def job_problem(row: Mapping[str, Any], *, default_zone: str, now: datetime) -> str | None:
    """Return why a stored job cannot be scheduled, or None if it can.

    Only the trigger decides: a job with malformed arguments still ticks, and each of its
    runs fails with the reason (a run is a row of its own).
    """
    try:
        trigger = TRIGGER_ADAPTER.validate_python(row.get("trigger"))
        first_fire_time(trigger, default_zone=default_zone, now=now)
    except Exception as error:  # whatever the stored value makes the trigger code raise
        return f"its trigger cannot be used: {describe_error(error)}"
    return None


def poll_problem(row: Mapping[str, Any]) -> str | None:
    """Return why a stored poll cannot be attempted or finished, or None if it can."""
    if not isinstance(row.get("arguments"), dict):
        return f"its arguments are not a JSON object: {_shown(row.get('arguments'))}"
    callbacks = row.get("callbacks")
    if not isinstance(callbacks, list) or not all(isinstance(c, str) for c in callbacks):
        return f"its callbacks are not a list of names: {_shown(callbacks)}"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
