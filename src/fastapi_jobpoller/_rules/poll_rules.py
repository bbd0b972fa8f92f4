"""Pure rules: given a claimed poll and what its attempt produced, what happens next.

No I/O here, so every rule (backoff, jitter, timeout, attempt and error budgets) is
tested directly.
"""

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..models import PollState
from ..outcomes import Done, Failed, Pending

__all__ = ["AttemptError", "Transition", "after_attempt", "backoff_delay", "timed_out"]

# Upper bound of a backed-off interval when the poll sets no `max_interval`.
_DEFAULT_BACKOFF_CAP_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The poll function raised, timed out, or returned something unusable."""

    message: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The new values of a poll after one attempt."""

    state: PollState
    consecutive_errors: int
    next_poll_at: datetime | None
    progress: Any = None
    result: Any = None
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Return whether the poll ended with this attempt."""
        return self.state.is_terminal


def backoff_delay(poll: Mapping[str, Any], attempts: int, rng: random.Random) -> float:
    """Return the seconds before the next attempt, after `attempts` attempts.

    `interval * backoff_factor ** (attempts - 1)`, capped by `max_interval`, plus a
    uniform jitter in `[0, jitter]`.
    """
    interval = float(poll["interval"])
    factor = float(poll["backoff_factor"])
    cap = poll["max_interval"] or max(interval, _DEFAULT_BACKOFF_CAP_SECONDS)
    delay = interval
    if factor > 1.0:
        # Stop multiplying once past the cap: no overflow for a poll's millionth attempt.
        for _ in range(max(attempts - 1, 0)):
            delay *= factor
            if delay >= cap:
                break
    delay = min(delay, cap)
    jitter = float(poll["jitter"])
    return delay + (rng.uniform(0.0, jitter) if jitter > 0 else 0.0)


def timed_out(poll: Mapping[str, Any], now: datetime) -> Transition | None:
    """Return the timed-out transition if the poll's deadline has passed."""
    deadline: datetime | None = poll["deadline"]
    if deadline is None or now < deadline:
        return None
    return Transition(
        state=PollState.TIMED_OUT,
        consecutive_errors=poll["consecutive_errors"],
        next_poll_at=None,
        progress=poll.get("progress"),
        error=f"timed out after {poll['timeout']:g} s",
    )


def after_attempt(
    poll: Mapping[str, Any],
    outcome: Pending | Done | Failed | AttemptError,
    now: datetime,
    rng: random.Random,
) -> Transition:
    """Decide the poll's next state from the outcome of attempt number `poll['attempts']`."""
    if isinstance(outcome, Done):
        return Transition(
            state=PollState.SUCCEEDED,
            consecutive_errors=0,
            next_poll_at=None,
            progress=poll.get("progress"),
            result=outcome.result,
        )
    if isinstance(outcome, Failed):
        return Transition(
            state=PollState.FAILED,
            consecutive_errors=0,
            next_poll_at=None,
            progress=poll.get("progress"),
            result=outcome.result,
            error=outcome.reason,
        )
    if isinstance(outcome, AttemptError):
        errors = poll["consecutive_errors"] + 1
        progress = poll.get("progress")
        error: str | None = outcome.message
        if errors > poll["max_errors"]:
            return Transition(
                state=PollState.FAILED,
                consecutive_errors=errors,
                next_poll_at=None,
                progress=progress,
                error=f"gave up after {errors} consecutive errors; last: {outcome.message}",
            )
        retry_after: float | None = None
    else:
        errors = 0
        progress = outcome.progress
        error = None
        retry_after = outcome.retry_after

    return _still_pending(
        poll, now, rng, errors=errors, progress=progress, error=error, retry_after=retry_after
    )


def _still_pending(
    poll: Mapping[str, Any],
    now: datetime,
    rng: random.Random,
    *,
    errors: int,
    progress: Any,
    error: str | None,
    retry_after: float | None,
) -> Transition:
    """Decide the state after an attempt that did not end the poll by itself: timed out,
    out of attempts, or pending until its next attempt."""
    attempts: int = poll["attempts"]
    expired = timed_out(poll, now)
    if expired is not None:
        return Transition(
            state=expired.state,
            consecutive_errors=errors,
            next_poll_at=None,
            progress=progress,
            error=expired.error,
        )
    max_attempts: int | None = poll["max_attempts"]
    if max_attempts is not None and attempts >= max_attempts:
        return Transition(
            state=PollState.FAILED,
            consecutive_errors=errors,
            next_poll_at=None,
            progress=progress,
            error=f"not finished after {attempts} attempts"
            + (f"; last error: {error}" if error else ""),
        )
    if retry_after is not None and retry_after >= 0:
        delay = float(retry_after)
    else:
        delay = backoff_delay(poll, attempts, rng)
    next_poll_at = now + timedelta(seconds=delay)
    deadline: datetime | None = poll["deadline"]
    if deadline is not None and next_poll_at > deadline:
        # Come back at the deadline, not after it, so the timeout is recorded on time.
        next_poll_at = deadline
    return Transition(
        state=PollState.PENDING,
        consecutive_errors=errors,
        next_poll_at=next_poll_at,
        progress=progress,
        error=error,
    )
