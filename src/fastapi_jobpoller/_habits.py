"""Job calls written the APScheduler way get an answer that says what to write instead.

`add_job(func, "interval", seconds=30)`, `args=[...]`, `id="x"`: Python's own error
(`unexpected keyword argument 'seconds'`) says nothing of the fix. The decorator here
checks a call against the method's signature first and, when it does not fit, explains
the mapping (docs/migration.md has it in full). A call that fits costs one bind.
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

__all__ = ["explain_apscheduler_habits"]

P = ParamSpec("P")
R = TypeVar("R")

_TRIGGER_CLASSES = {"interval": "IntervalTrigger", "cron": "CronTrigger", "date": "DateTrigger"}
_TRIGGER_FIELDS = {
    "interval": {"weeks", "days", "hours", "minutes", "seconds"},
    "cron": {"year", "month", "day", "week", "day_of_week", "hour", "minute", "second"},
    "date": {"run_date"},
}
_ANY_TRIGGER_FIELD = {"start_date", "end_date", "timezone", "jitter"}
_INSTEAD = {
    "args": "arguments={'name': value}: arguments are named, not positional",
    "kwargs": "arguments={'name': value}",
    "id": "job_id='...'",
    "next_run_time": "paused=True to add it paused, or a DateTrigger for one run",
    "trigger_args": "the fields inside the trigger, e.g. IntervalTrigger(seconds=30)",
    "name": "nothing: a job is known by its job_id",
    "jobstore": "nothing: the poller's database is the only store",
    "executor": "nothing: `def` functions run on threads, `async def` on the event loop",
}


def _trigger_kind(fields: set[str]) -> str | None:
    for kind, names in _TRIGGER_FIELDS.items():
        if fields & names:
            return kind
    return None


def _advice(method: str, positional: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str | None:
    """Say how to write an APScheduler-style call, or None if it does not look like one."""
    named = set(kwargs)
    trigger_fields = named & (set().union(*_TRIGGER_FIELDS.values()) | _ANY_TRIGGER_FIELD)
    given = positional.get("trigger", kwargs.get("trigger"))
    kind = given if isinstance(given, str) and given in _TRIGGER_CLASSES else None
    kind = kind or _trigger_kind(trigger_fields)
    if trigger_fields and kind is not None:
        inside = ", ".join(f"{k}={kwargs[k]!r}" for k in sorted(trigger_fields))
        return (
            f"{method}() takes the trigger as one value: write "
            f"{_TRIGGER_CLASSES[kind]}({inside}) (or {{'type': '{kind}', ...}}) as its "
            f"trigger, where APScheduler took {kind!r} and the fields as keywords; see "
            "docs/migration.md"
        )
    known = [f"{k}: write {_INSTEAD[k]}" for k in sorted(named) if k in _INSTEAD]
    if known:
        return f"{method}() has no such keyword as APScheduler's: " + "; ".join(known)
    return None


def explain_apscheduler_habits(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a call that does not fit `method`'s signature into advice when it can."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            try:
                positional = dict(signature.bind_partial(*args).arguments)
            except TypeError:
                positional = {}
            advice = _advice(method.__name__, positional, kwargs)
            if advice is None:
                raise
            raise TypeError(advice) from error
        function = bound.arguments.get("function")
        if callable(function):
            name = getattr(function, "__name__", "the_function")
            raise TypeError(
                f"{method.__name__}() takes the registered function's name, e.g. "
                f"{method.__name__}(..., {name!r}, ...): the database stores names, not "
                "functions"
            )
        return method(*args, **kwargs)

    return call
