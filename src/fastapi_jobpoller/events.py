"""Engine events: one vocabulary for the log lines and for users' listeners.

Every occurrence is emitted once, by the process where it happened, and becomes a log
record (logger `fastapi_jobpoller.events`, `extra={"event": ..., ...}`) and a call of
every listener subscribed to its type. Listeners run off the engine's path: each has
its own queue and task, `async def` ones are awaited, `def` ones run on a thread, and a
slow or failing listener only delays or loses its own deliveries.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .threads import DaemonThreadPool

__all__ = ["Event", "EventBus", "EventType", "Listener"]

logger = logging.getLogger("fastapi_jobpoller.events")

# Events a listener may have waiting before newer ones are dropped (and counted).
_QUEUE_SIZE = 10_000
# Longest a single listener call may take before it is abandoned and logged.
_LISTENER_TIMEOUT_SECONDS = 30.0


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
    POLL_SUBMITTED = "poll_submitted"
    POLL_ATTEMPT_STARTED = "poll_attempt_started"
    POLL_PENDING = "poll_pending"
    POLL_SUCCEEDED = "poll_succeeded"
    POLL_FAILED = "poll_failed"
    POLL_TIMED_OUT = "poll_timed_out"
    POLL_CANCELLED = "poll_cancelled"
    POLL_CALLBACK_FAILED = "poll_callback_failed"


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
    EventType.POLL_SUBMITTED: logging.DEBUG,
    EventType.POLL_ATTEMPT_STARTED: logging.DEBUG,
    EventType.POLL_PENDING: logging.DEBUG,
    EventType.POLL_SUCCEEDED: logging.DEBUG,
    EventType.POLL_FAILED: logging.WARNING,
    EventType.POLL_TIMED_OUT: logging.WARNING,
    EventType.POLL_CANCELLED: logging.INFO,
    EventType.POLL_CALLBACK_FAILED: logging.ERROR,
}
# An attempt that raised leaves its poll pending (a transient error), but it is a failure
# of user code all the same: it must show at INFO.
_LEVEL_OF_PENDING_ERROR = logging.WARNING


def _level(event: "Event") -> int:
    if event.type is EventType.POLL_PENDING and event.error is not None:
        return _LEVEL_OF_PENDING_ERROR
    return _LEVELS[event.type]


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
        text = f"{self.type.value} {subject}"
        if self.attempt is not None:
            text += f" attempt={self.attempt}"
        if self.outcome is not None:
            text += f" outcome={self.outcome}"
        if self.error:
            text += f" error={self.error}"
        return text


Listener = Callable[[Event], Awaitable[None] | None]


class _Subscription:
    def __init__(self, listener: Listener, types: frozenset[EventType]) -> None:
        self.listener = listener
        self.types = types
        # A listener object may define `async def __call__`: it is awaited too.
        self.is_async = asyncio.iscoroutinefunction(listener) or asyncio.iscoroutinefunction(
            type(listener).__call__
        )
        self.queue: asyncio.Queue[Event] | None = None
        self.task: asyncio.Task[None] | None = None
        # A `def` listener's own thread: one that hangs holds this thread only, never
        # the other listeners' (and, a daemon, never the process's exit).
        self.thread: DaemonThreadPool | None = None
        self.dropped = 0

    def close_thread(self) -> None:
        if self.thread is not None:
            self.thread.shutdown(wait=False, cancel_futures=True)
            self.thread = None


class EventBus:
    """Logs every event and hands it to the listeners subscribed to its type."""

    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []
        self._running = False

    def subscribe(self, listener: Listener, types: Iterable[EventType] = ()) -> None:
        """Call `listener` for every event of `types` (all types if none are given)."""
        wanted = frozenset(EventType(t) for t in types) or frozenset(EventType)
        subscription = _Subscription(listener, wanted)
        self._subscriptions.append(subscription)
        if self._running:
            self._start_subscription(subscription)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        for subscription in [s for s in self._subscriptions if s.listener is listener]:
            self._subscriptions.remove(subscription)
            if subscription.task is not None:
                subscription.task.cancel()
            subscription.close_thread()

    def start(self) -> None:
        """Start delivering on the running event loop."""
        self._running = True
        for subscription in self._subscriptions:
            self._start_subscription(subscription)

    def _start_subscription(self, subscription: _Subscription) -> None:
        subscription.queue = asyncio.Queue(_QUEUE_SIZE)
        subscription.task = asyncio.create_task(
            self._deliver(subscription), name="jobpoller-listener"
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Deliver what is queued (for up to `grace` seconds), then stop."""
        self._running = False
        queues = [s.queue for s in self._subscriptions if s.queue is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                for queue in queues:
                    await queue.join()
        tasks = [s.task for s in self._subscriptions if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for subscription in self._subscriptions:
            subscription.task = subscription.queue = None
            subscription.close_thread()

    def wants(self, event_type: EventType) -> bool:
        """Return whether anything would see an event of this type (log or listener)."""
        level = _LEVELS[event_type]
        if event_type is EventType.POLL_PENDING:  # logged higher when it carries an error
            level = max(level, _LEVEL_OF_PENDING_ERROR)
        if logger.isEnabledFor(level):
            return True
        # Asked twice per attempt: no generator when nobody listens.
        return bool(self._subscriptions) and any(event_type in s.types for s in self._subscriptions)

    def emit(self, event: Event) -> None:
        """Log the event and queue it for its listeners; never blocks, never raises."""
        level = _level(event)
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "%s",
                event.message(),
                extra=event.log_fields(),
                exc_info=None,
            )
        for subscription in self._subscriptions:
            if event.type not in subscription.types or subscription.queue is None:
                continue
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscription.dropped += 1
                if subscription.dropped == 1 or subscription.dropped % 1000 == 0:
                    logger.warning(
                        "listener %r is too slow; %d events dropped so far",
                        subscription.listener,
                        subscription.dropped,
                        extra={"event": "listener_overflow", "count": subscription.dropped},
                    )

    async def _deliver(self, subscription: _Subscription) -> None:
        queue = subscription.queue
        assert queue is not None
        while True:
            event = await queue.get()
            try:
                async with asyncio.timeout(_LISTENER_TIMEOUT_SECONDS):
                    if subscription.is_async:
                        await subscription.listener(event)  # type: ignore[misc]
                    else:
                        loop = asyncio.get_running_loop()
                        if subscription.thread is None:
                            subscription.thread = DaemonThreadPool(1, name="jobpoller-listener")
                        await loop.run_in_executor(
                            subscription.thread, subscription.listener, event
                        )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "listener %r failed on %s",
                    subscription.listener,
                    event.type.value,
                    extra={"event": "listener_failed", "listener_event": event.type.value},
                )
            finally:
                queue.task_done()
