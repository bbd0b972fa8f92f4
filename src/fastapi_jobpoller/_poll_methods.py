"""The poll half of `JobPoller`: start, read, list, cancel and wait for polls."""

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ._poller_base import PollerBase, check_id, check_page, default, in_thread
from ._rows import read_row
from ._storage.tables import utcnow
from .events import EventType
from .exceptions import InvalidArgumentsError, PollNotFoundError
from .models import PollAttemptInfo, PollInfo, PollOptions, PollState

__all__ = ["PollMethods"]

# `wait_for_poll` looks at the row after 50 ms, then less and less often, up to every
# half second: quick answers for quick polls, little load from many long waits.
_WAIT_FIRST_SECONDS = 0.05
_WAIT_LONGEST_SECONDS = 0.5
_POLL_OPTIONS_ADAPTER: TypeAdapter[PollOptions] = TypeAdapter(PollOptions)


class PollMethods(PollerBase):
    """Per-request polls."""

    async def start_poll(
        self,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        poll_id: str | None = None,
        options: PollOptions | None = None,
        **option_values: Any,
    ) -> PollInfo:
        """Start polling `function` with `arguments` until it reports an end.

        Submitting an id again returns the stored poll if the function and arguments
        are the same (whatever its state and options), and raises `PollConflictError`
        otherwise.

        Args:
            function: A registered poll function's name.
            arguments: JSON arguments, validated against the function's signature.
            poll_id: A stable id (e.g. your request id); default: a new UUID.
            options: Pacing and limits; or give them as keywords (`interval=5`, ...).

        Raises:
            FunctionNotFoundError: No poll function (or callback) has that name.
            InvalidArgumentsError: The arguments or options are invalid.
            PollConflictError: The id is taken by a different poll.
        """
        info, _ = await self.submit_poll(
            function, arguments, poll_id=poll_id, options=options, **option_values
        )
        return info

    async def submit_poll(
        self,
        function: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        poll_id: str | None = None,
        options: PollOptions | None = None,
        **option_values: Any,
    ) -> tuple[PollInfo, bool]:
        """Do what `start_poll` does; also return whether the poll was created now."""
        dispatcher = self._require_running()
        stored_arguments = await self._checked_arguments("poll", function, arguments)
        try:
            if options is None:
                options = _POLL_OPTIONS_ADAPTER.validate_python(option_values)
            elif option_values:
                options = PollOptions(**{**options.model_dump(), **option_values})
        except ValidationError as exc:
            raise InvalidArgumentsError(f"invalid poll options: {exc}") from None
        await self._look_up_elsewhere("callback", *options.callbacks)
        for name in options.callbacks:
            self._registry.require_known("callback", name)
        now = utcnow()
        row = self._new_poll_row(function, stored_arguments, poll_id, options, now)
        # Every engine, this process's too, looks for due polls at least every
        # idle_wait_seconds: only a poll due sooner is worth waking them for. Twice that,
        # because an engine may have looked after `now` but before the insert commits.
        soon = options.delay < 2 * self.settings.idle_wait_seconds
        stored, created = await in_thread(lambda: self._polls.insert(row, announce=soon))
        if created:
            if soon:
                dispatcher.wake(jobs=False)
            self._emit(EventType.POLL_SUBMITTED, poll_id=row["id"], function=function)
        return read_row(PollInfo, stored), created

    def _new_poll_row(
        self,
        function: str,
        arguments: dict[str, Any],
        poll_id: str | None,
        options: PollOptions,
        now: datetime,
    ) -> dict[str, Any]:
        settings = self.settings
        timeout = default(options.timeout, settings.default_poll_timeout)
        return {
            "id": check_id("poll", poll_id) if poll_id is not None else uuid.uuid4().hex,
            "function": function,
            "arguments": arguments,
            "state": PollState.PENDING.value,
            "attempts": 0,
            "consecutive_errors": 0,
            "interval": default(options.interval, settings.default_poll_interval),
            "backoff_factor": options.backoff_factor,
            "max_interval": options.max_interval,
            "jitter": options.jitter,
            "timeout": timeout,
            "max_attempts": options.max_attempts,
            "max_errors": default(options.max_errors, settings.default_max_errors),
            "callbacks": list(options.callbacks),
            "callbacks_pending": False,
            "callback_attempts": 0,
            "created_at": now,
            "deadline": None if timeout is None else now + timedelta(seconds=timeout),
            "next_poll_at": now + timedelta(seconds=options.delay),
            "finished_at": None,
            "updated_at": now,
            "progress": None,
            "result": None,
            "error": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }

    async def get_poll(self, poll_id: str) -> PollInfo:
        """Return a poll by id.

        Raises:
            PollNotFoundError: No poll has that id.
        """
        self._require_running()
        row = await in_thread(lambda: self._polls.get(poll_id))
        if row is None:
            raise PollNotFoundError(f"no poll has id {poll_id!r}")
        return read_row(PollInfo, row)

    async def list_polls(
        self,
        *,
        state: PollState | Sequence[PollState] | None = None,
        function: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[PollInfo]:
        """Return polls, newest first, optionally filtered by state(s) and function."""
        self._require_running()
        check_page(limit, offset)
        states = () if state is None else (state,) if isinstance(state, PollState) else state
        rows = await in_thread(
            lambda: self._polls.list_polls(
                states=tuple(PollState(s) for s in states),
                function=function,
                limit=limit,
                offset=offset,
            )
        )
        return [read_row(PollInfo, r) for r in rows]

    async def count_polls_by_state(self) -> dict[PollState, int]:
        """Return how many stored polls are in each state (every state present)."""
        self._require_running()
        counts = await in_thread(self._polls.count_by_state)
        return {state: counts.get(state.value, 0) for state in PollState}

    async def cancel_poll(self, poll_id: str) -> PollInfo:
        """Cancel a poll; an attempt in flight finishes, but its outcome is dropped.

        Raises:
            PollNotFoundError: No poll has that id.
            InvalidStateError: The poll has already ended.
        """
        dispatcher = self._require_running()
        row = await in_thread(lambda: self._polls.cancel(poll_id, utcnow()))
        dispatcher.wake(jobs=False)
        self._emit(
            EventType.POLL_CANCELLED,
            poll_id=poll_id,
            function=row["function"],
            attempt=row["attempts"],
            outcome=PollState.CANCELLED.value,
        )
        return read_row(PollInfo, row)

    # It returns the poll as it is when the time is up instead of raising, so `timeout`
    # is a parameter rather than a cancel scope the caller wraps around it.
    async def wait_for_poll(self, poll_id: str, *, timeout: float) -> PollInfo:  # noqa: ASYNC109
        """Return the poll once it has ended and its callbacks ran, or after `timeout` s.

        Raises:
            PollNotFoundError: No poll has that id.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout
        pause = _WAIT_FIRST_SECONDS
        while True:
            poll = await self.get_poll(poll_id)
            if (poll.is_terminal and not poll.callbacks_pending) or loop.time() >= give_up_at:
                return poll
            await asyncio.sleep(min(pause, max(give_up_at - loop.time(), 0)))
            pause = min(pause * 1.5, _WAIT_LONGEST_SECONDS)

    async def list_poll_attempts(
        self,
        *,
        poll_id: str | None = None,
        outcome: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[PollAttemptInfo]:
        """Return recorded attempts (see `attempt_history`), latest first."""
        self._require_running()
        check_page(limit, offset)
        outcomes = () if outcome is None else (outcome,) if isinstance(outcome, str) else outcome
        rows = await in_thread(
            lambda: self._history.list_attempts(
                poll_id=poll_id,
                outcomes=tuple(outcomes),
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )
        return [read_row(PollAttemptInfo, r) for r in rows]
