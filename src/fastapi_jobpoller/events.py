"""Engine events: one vocabulary for the log lines and for users' listeners.

Every occurrence is emitted once, by the process where it happened, and becomes a log
record (logger `fastapi_jobpoller.events`, `extra={"event": ..., ...}`) and a call of
every listener subscribed to its type. The engine's event bus (`_engine/event_bus.py`)
delivers them; this module holds what listeners see: `Event`, `EventType`, `Listener`.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventType", "Listener", "log_level"]


class EventType(StrEnum):
    """What happened. Values are the `event` field of log records too."""

    SCHEDULER_STARTED = "scheduler_started"
    SCHEDULER_STOPPED = "scheduler_stopped"
    JOB_ADDED = "job_added"
    JOB_MODIFIED = "job_modified"
    JOB_PAUSED = "job_paused"
    JOB_RESUMED = "job_resumed"
    JOB_REMOVED = "job_removed"
    JOB_SUBMITTED = "job_submitted"
    JOB_EXECUTED = "job_executed"
    JOB_ERROR = "job_error"
    JOB_MISSED = "job_missed"
    JOB_MAX_INSTANCES = "job_max_instances"
    JOB_QUARANTINED = "job_quarantined"
    POLL_SUBMITTED = "poll_submitted"
    POLL_ATTEMPT_STARTED = "poll_attempt_started"
    POLL_PENDING = "poll_pending"
    POLL_SUCCEEDED = "poll_succeeded"
    POLL_FAILED = "poll_failed"
    POLL_TIMED_OUT = "poll_timed_out"
    POLL_CANCELLED = "poll_cancelled"
    POLL_CALLBACK_FAILED = "poll_callback_failed"
    POLL_QUARANTINED = "poll_quarantined"
    THREAD_STUCK = "thread_stuck"
    WORKER_LOST = "worker_lost"


# Healthy operation logs at DEBUG (quiet at INFO); configuration changes at INFO; what
# someone should look at at WARNING; failures of user code at ERROR.
_LEVELS: dict[EventType, int] = {
    EventType.SCHEDULER_STARTED: logging.INFO,
    EventType.SCHEDULER_STOPPED: logging.INFO,
    EventType.JOB_ADDED: logging.INFO,
    EventType.JOB_MODIFIED: logging.INFO,
    EventType.JOB_PAUSED: logging.INFO,
    EventType.JOB_RESUMED: logging.INFO,
    EventType.JOB_REMOVED: logging.INFO,
    EventType.JOB_SUBMITTED: logging.DEBUG,
    EventType.JOB_EXECUTED: logging.DEBUG,
    EventType.JOB_ERROR: logging.ERROR,
    EventType.JOB_MISSED: logging.WARNING,
    EventType.JOB_MAX_INSTANCES: logging.WARNING,
    EventType.JOB_QUARANTINED: logging.WARNING,
    EventType.POLL_SUBMITTED: logging.DEBUG,
    EventType.POLL_ATTEMPT_STARTED: logging.DEBUG,
    EventType.POLL_PENDING: logging.DEBUG,
    EventType.POLL_SUCCEEDED: logging.DEBUG,
    EventType.POLL_FAILED: logging.WARNING,
    EventType.POLL_TIMED_OUT: logging.WARNING,
    EventType.POLL_CANCELLED: logging.INFO,
    EventType.POLL_CALLBACK_FAILED: logging.ERROR,
    EventType.POLL_QUARANTINED: logging.WARNING,
    EventType.THREAD_STUCK: logging.WARNING,
    # Logged at WARNING by the process that takes the lost one's work over, with counts.
    EventType.WORKER_LOST: logging.DEBUG,
}
# An attempt that raised leaves its poll pending (a transient error), but it is a failure
# of user code all the same: it must show at INFO.
_LEVEL_OF_PENDING_ERROR = logging.WARNING


def log_level(event_type: EventType, *, error: bool = False) -> int:
    """Return the level an event of this type is logged at (`error`: it carries one)."""
    if event_type is EventType.POLL_PENDING and error:
        return _LEVEL_OF_PENDING_ERROR
    return _LEVELS[event_type]


@dataclass(frozen=True, slots=True)
class Event:
    """One occurrence, with what a listener needs without a second lookup."""

    type: EventType
    at: datetime
    worker_id: str
    job_id: str | None = None
    run_id: str | None = None
    poll_id: str | None = None
    function: str | None = None
    attempt: int | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    duration: float | None = None
    outcome: str | None = None
    result: Any = None
    progress: Any = None
    error: str | None = None
    traceback: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def log_fields(self) -> dict[str, Any]:
        """Return the non-empty fields as a flat dict for `logging`'s `extra`."""
        fields = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        fields["event"] = self.type.value
        fields.pop("type", None)
        fields.pop("traceback", None)
        return fields

    def message(self) -> str:
        """Return a one-line human summary."""
        subject = self.poll_id or self.job_id or self.worker_id
        text = f"{self.type.value} {_quoted(subject)}"
        if self.attempt is not None:
            text += f" attempt={self.attempt}"
        if self.outcome is not None:
            text += f" outcome={self.outcome}"
        if self.error:
            text += f" error={_quoted(self.error)}"
        return text


Listener = Callable[[Event], Awaitable[None] | None]


def _quoted(text: str) -> str:
    """Return `text` in double quotes, every character that could end or bend a line escaped.

    Ids are refused with control characters, but error texts come from users' functions
    and rows written by older versions: a line break or a right-to-left override in them
    must not forge a second log line or reorder the one it is in.
    """
    return '"' + "".join(_escaped(ch) for ch in text) + '"'


def _escaped(ch: str) -> str:
    if ch in ('"', "\\"):
        return "\\" + ch
    if ch.isprintable() or ch == " ":
        return ch
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
