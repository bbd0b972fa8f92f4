"""What a poll function returns: `Pending`, `Done` or `Failed`.

Raising an exception is none of these: it is a transient error, counted against the poll's
budget of consecutive errors and retried at the next interval.
"""

from dataclasses import dataclass
from typing import Any

__all__ = ["Done", "Failed", "Pending", "PollOutcome"]


@dataclass(frozen=True, slots=True)
class Pending:
    """The watched work is still going on; poll again later.

    Attributes:
        progress: Any JSON value worth storing (a percentage, a stage name, a dict).
        retry_after: Seconds until the next attempt, overriding the computed interval
            (like an HTTP `Retry-After` header); the poll's timeout still applies.
    """

    progress: Any = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The watched work finished; `result` (any JSON value) is stored with the poll."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The watched work failed for good; `reason` is stored as the poll's error."""

    reason: str = "failed"
    result: Any = None


PollOutcome = Pending | Done | Failed
