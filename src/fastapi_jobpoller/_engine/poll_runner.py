"""One poll attempt, from the claimed row to the stored outcome and its callbacks.

Pending outcomes are handed to the write buffer (`WriteBack`, written back in batches);
terminal ones are written at once, fenced, and then their callbacks run: the stored
terminal state is the outbox, so callbacks run at least once even across a crash.
"""

import dataclasses
import random
import time
import uuid
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any

from .._rules.poll_rules import AttemptError, Transition, after_attempt, backoff_delay, timed_out
from .._rules.row_checks import poll_problem
from .._storage.attempt_store import AttemptStore
from .._storage.tables import utcnow
from ..config import JobPollerSettings
from ..events import EventType
from ..exceptions import FunctionNotFoundError
from ..models import PollInfo, PollState
from ..outcomes import Done, Failed, Pending
from .caller import FunctionCaller, describe, format_traceback, is_json, storable_text
from .event_bus import EventBus
from .outages import write_through_outages
from .registry import Registry
from .thread_slots import NoFreeThreadError
from .write_back import WriteBack

__all__ = ["PollRunner"]

# Longest pause between two deliveries of a poll's failing callbacks.
_MAX_CALLBACK_RETRY_SECONDS = 3600.0
# A poll of a function only another live process registers comes back this soon at the
# latest, so that process claims it instead of waiting `unknown_function_retry_seconds`.
_ELSEWHERE_RETRY_SECONDS = 1.0

_TERMINAL_EVENTS = {
    PollState.SUCCEEDED: EventType.POLL_SUCCEEDED,
    PollState.FAILED: EventType.POLL_FAILED,
    PollState.TIMED_OUT: EventType.POLL_TIMED_OUT,
    PollState.CANCELLED: EventType.POLL_CANCELLED,
}


class PollRunner:
    """Runs attempts, timeouts and callbacks of claimed polls for one process."""

    def __init__(
        self,
        *,
        settings: JobPollerSettings,
        registry: Registry,
        caller: FunctionCaller,
        events: EventBus,
        store: AttemptStore,
        database_pool: Executor,
        worker_id: str,
        write_back: WriteBack,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._caller = caller
        self._events = events
        self._store = store
        self._database_pool = database_pool
        self._worker_id = worker_id
        self._write_back = write_back
        self._rng = random.Random()

    def _event(self, event_type: EventType, row: dict[str, Any], **fields: Any) -> None:
        self._events.publish(
            event_type, self._worker_id, poll_id=row["id"], function=row["function"], **fields
        )

    async def attempt(self, row: dict[str, Any]) -> None:
        """Run one attempt of a claimed poll and store what it reported."""
        problem = poll_problem(row)
        if problem is not None:
            await self._quarantine(row, problem)
            return
        try:
            function = self._registry.get("poll", row["function"])
        except FunctionNotFoundError:
            await self._unknown_function(row)
            return
        started_at = utcnow()
        self._event(
            EventType.POLL_ATTEMPT_STARTED,
            row,
            attempt=row["attempts"],
            scheduled_at=row.get("due_at"),
            started_at=started_at,
        )
        started = time.monotonic()
        outcome: Pending | Done | Failed | AttemptError
        try:
            value = await self._caller.call(function, **function.bind_arguments(row["arguments"]))
        except NoFreeThreadError as error:
            # Not an attempt: it waited for a thread that stuck calls held, and never ran.
            await self._put_back(row, str(error), backoff_delay(row, row["attempts"], self._rng))
            return
        except TimeoutError as error:
            outcome = AttemptError(
                f"attempt timed out after {self._settings.attempt_timeout:g} s",
                traceback=format_traceback(error),
            )
        except Exception as error:
            outcome = AttemptError(describe(error), traceback=format_traceback(error))
        else:
            outcome = _checked_outcome(value)
        now = utcnow()
        transition = after_attempt(row, outcome, now, self._rng)
        history = self._history_row(row, outcome, transition, started_at, now)
        await self._apply(
            row,
            transition,
            now,
            history=history,
            duration=time.monotonic() - started,
            traceback=outcome.traceback if isinstance(outcome, AttemptError) else None,
            errored=isinstance(outcome, AttemptError),
        )

    def _history_row(
        self,
        row: dict[str, Any],
        outcome: Pending | Done | Failed | AttemptError,
        transition: Transition,
        started_at: datetime,
        now: datetime,
    ) -> dict[str, Any] | None:
        mode = self._settings.attempt_history
        is_error = isinstance(outcome, AttemptError)
        changed = transition.progress != row.get("progress")
        if mode == "none" or (
            mode == "transitions" and not (is_error or transition.is_terminal or changed)
        ):
            return None
        return {
            "id": uuid.uuid4().hex,
            "poll_id": row["id"],
            "function": row["function"],
            "attempt": row["attempts"],
            "worker": self._worker_id,
            "started_at": started_at,
            "finished_at": now,
            "outcome": "error" if is_error else transition.state.value,
            "progress": transition.progress,
            "error": outcome.message if isinstance(outcome, AttemptError) else transition.error,
            "traceback": outcome.traceback if isinstance(outcome, AttemptError) else None,
        }

    async def _unknown_function(self, row: dict[str, Any]) -> None:
        """Leave a poll of a function this process lacks stored, for one that has it: soon
        if a live process of the worker registry registers it, else after a long pause."""
        pause = self._settings.unknown_function_retry_seconds
        if self._registry.is_known("poll", row["function"]):
            pause = min(pause, _ELSEWHERE_RETRY_SECONDS)
        delay = max(backoff_delay(row, max(row["attempts"] - 1, 1), self._rng), pause)
        message = f"function {row['function']!r} is not registered in {self._worker_id}"
        await self._put_back(row, message, delay)

    async def _put_back(self, row: dict[str, Any], message: str, delay: float) -> None:
        """Leave a claimed poll pending, its attempt uncounted (none ran), for `delay` s."""
        now = utcnow()
        transition = Transition(
            state=PollState.PENDING,
            consecutive_errors=row["consecutive_errors"],
            next_poll_at=now + timedelta(seconds=delay),
            progress=row.get("progress"),
            error=message,
        )
        await self._apply(row, transition, now, history=None, uncount=True)

    async def expire(self, row: dict[str, Any]) -> None:
        """Record the timeout of a claimed poll past its deadline, without an attempt."""
        now = utcnow()
        transition = timed_out(row, now)
        if transition is not None:
            await self._apply(row, transition, now, history=None)

    async def _apply(
        self,
        row: dict[str, Any],
        transition: Transition,
        now: datetime,
        *,
        history: dict[str, Any] | None,
        duration: float | None = None,
        traceback: str | None = None,
        uncount: bool = False,
        errored: bool = False,
    ) -> None:
        # An attempt that raised has the outcome `error`, as in its history row, whatever
        # state it left the poll in.
        event_fields = {
            "attempt": row["attempts"],
            "duration": duration,
            "outcome": "error" if errored else transition.state.value,
            "progress": transition.progress,
            "error": transition.error,
            "traceback": traceback,
        }
        if not transition.is_terminal:
            self._write_back.queue(
                {
                    "id": row["id"],
                    "attempts": row["attempts"],
                    "new_attempts": row["attempts"] - 1 if uncount else row["attempts"],
                    "consecutive_errors": transition.consecutive_errors,
                    "next_poll_at": transition.next_poll_at,
                    "progress": transition.progress,
                    "error": transition.error,
                    "updated_at": now,
                },
                history,
            )
            self._event(EventType.POLL_PENDING, row, **event_fields)
            return
        await self._finish(row, transition, now, history=history, event_fields=event_fields)

    async def _finish(
        self,
        row: dict[str, Any],
        transition: Transition,
        now: datetime,
        *,
        history: dict[str, Any] | None,
        event_fields: dict[str, Any],
    ) -> None:
        """Write a terminal transition (fenced), tell listeners, then run the callbacks."""
        values = {
            "state": transition.state.value,
            "consecutive_errors": transition.consecutive_errors,
            "progress": transition.progress,
            "result": transition.result,
            "error": transition.error,
            "callbacks_pending": bool(row["callbacks"]),
        }
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        landed = await write_through_outages(
            self._database_pool,
            self._store.write_terminal,
            row["id"],
            worker=self._worker_id,
            attempts=row["attempts"],
            values=values,
            now=now,
            lease_until=lease_until,
            history=history,
        )
        if not landed:
            # Cancelled meanwhile, or the lease was lost to another process: its story.
            return
        self._event(
            _TERMINAL_EVENTS[transition.state], row, result=transition.result, **event_fields
        )
        if row["callbacks"]:
            terminal = {
                **row,
                **values,
                "finished_at": now,
                "updated_at": now,
                "next_poll_at": lease_until,
                "lease_expires_at": lease_until,
            }
            await self.deliver_callbacks(terminal)

    async def _quarantine(self, row: dict[str, Any], problem: str) -> None:
        """Set aside a poll whose stored row cannot be used, and say so once."""
        landed = await write_through_outages(
            self._database_pool,
            self._store.quarantine,
            row,
            worker=self._worker_id,
            reason=problem,
            now=utcnow(),
        )
        if landed:
            self._event(EventType.POLL_QUARANTINED, row, attempt=row["attempts"], error=problem)

    async def deliver_callbacks(self, row: dict[str, Any]) -> None:
        """Run a terminal poll's callbacks; if one fails, all run again later."""
        problem = poll_problem(row)
        if problem is not None:
            await self._quarantine(row, problem)
            return
        failure: tuple[str, Exception] | None = None
        for name in row["callbacks"]:
            try:
                info = PollInfo.model_validate(row)
                callback = self._registry.get("callback", name)
                await self._caller.call(callback, info)
            except Exception as raised:
                failure = (name, raised)
                break
        now = utcnow()
        if failure is None:
            await write_through_outages(
                self._database_pool,
                self._store.finish_callbacks,
                row["id"],
                worker=self._worker_id,
                now=now,
            )
            return
        await self._callback_failed(row, *failure, now)

    async def _callback_failed(
        self, row: dict[str, Any], name: str, failed_with: Exception, now: datetime
    ) -> None:
        """Schedule the next delivery of a poll's callbacks, or give up on them."""
        if isinstance(failed_with, NoFreeThreadError):  # it never ran: not a delivery
            await write_through_outages(
                self._database_pool,
                self._store.release_for_retry,
                row["id"],
                worker=self._worker_id,
                at=now + timedelta(seconds=self._settings.callback_retry_seconds),
                give_up=False,
                count=False,
            )
            return
        tries = row.get("callback_attempts", 0) + 1
        give_up = tries >= self._settings.callback_max_attempts
        delay = min(
            self._settings.callback_retry_seconds * 2 ** min(tries - 1, 30),
            max(_MAX_CALLBACK_RETRY_SECONDS, self._settings.callback_retry_seconds),
        )
        self._event(
            EventType.POLL_CALLBACK_FAILED,
            row,
            outcome=row["state"],
            error=describe(failed_with),
            traceback=format_traceback(failed_with),
            details={
                "callback": name,
                "delivery": tries,
                "gave_up": give_up,
                "retry_in": None if give_up else delay,
            },
        )
        await write_through_outages(
            self._database_pool,
            self._store.release_for_retry,
            row["id"],
            worker=self._worker_id,
            at=now + timedelta(seconds=delay),
            give_up=give_up,
        )


def _checked_outcome(value: object) -> Pending | Done | Failed | AttemptError:
    if not isinstance(value, Pending | Done | Failed):
        return AttemptError(
            f"poll functions return Pending(), Done() or Failed(), not {type(value).__name__}"
        )
    payload = value.progress if isinstance(value, Pending) else value.result
    if not is_json(payload):
        return AttemptError(f"{type(value).__name__} holds a value that is not JSON")
    if isinstance(value, Pending) and value.retry_after is not None and value.retry_after < 0:
        return AttemptError("Pending.retry_after must not be negative")
    if isinstance(value, Failed) and value.reason != storable_text(str(value.reason)):
        return dataclasses.replace(value, reason=storable_text(str(value.reason)))
    return value
