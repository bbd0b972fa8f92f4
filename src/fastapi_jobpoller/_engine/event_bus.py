"""The engine's event bus: logs each event once and hands it to subscribed listeners.

Listeners run off the engine's path: each has its own queue and task, `async def` ones
are awaited, `def` ones run on a thread of their own, and a slow or failing listener only
delays or loses its own deliveries.
"""

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..events import Event, EventType, Listener, log_level
from .threads import DaemonThreadPool

__all__ = ["EventBus"]

# The documented logger of engine events, whatever module emits them.
logger = logging.getLogger("fastapi_jobpoller.events")

# Events a listener may have waiting before newer ones are dropped (and counted).
_QUEUE_SIZE = 10_000
# Longest a single listener call may take before it is abandoned and logged.
_LISTENER_TIMEOUT_SECONDS = 30.0
# The same trouble of the same row (event type, poll or job, error) is logged at its level
# at most once a minute; the repeats at DEBUG. Listeners get every event.
_REPEAT_AFTER_SECONDS = 60.0
# Entries remembered for that before the expired ones are dropped.
_SAID_KEPT = 10_000


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
        # When each (type, row, error) was last logged at WARNING or above.
        self._said: collections.OrderedDict[tuple[EventType, str, str | None], float] = (
            collections.OrderedDict()
        )

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
        if logger.isEnabledFor(log_level(event_type, error=True)):
            return True
        # Asked twice per attempt: no generator when nobody listens.
        return bool(self._subscriptions) and any(event_type in s.types for s in self._subscriptions)

    def _said_lately(self, event: Event) -> bool:
        """Return whether this trouble of this row was logged within the last minute."""
        subject = event.poll_id or event.job_id
        if subject is None:
            return False
        key = (event.type, subject, event.error)
        now = time.monotonic()
        said = self._said.get(key)
        if said is not None and now - said < _REPEAT_AFTER_SECONDS:
            return True
        # Oldest first: drop what is past the minute, and past the size bound the oldest.
        while self._said and (
            len(self._said) >= _SAID_KEPT
            or now - next(iter(self._said.values())) >= _REPEAT_AFTER_SECONDS
        ):
            self._said.popitem(last=False)
        self._said[key] = now
        self._said.move_to_end(key)
        return False

    def publish(self, event_type: EventType, worker_id: str, **fields: Any) -> None:
        """Emit an event of this type, now, if anything would see it."""
        if self.wants(event_type):
            self.emit(Event(type=event_type, at=datetime.now(UTC), worker_id=worker_id, **fields))

    def emit(self, event: Event) -> None:
        """Log the event and queue it for its listeners; never blocks, never raises."""
        level = log_level(event.type, error=event.error is not None)
        if level >= logging.WARNING and self._said_lately(event):
            level = logging.DEBUG  # the same trouble of the same row, said a moment ago
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
