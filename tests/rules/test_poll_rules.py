"""The pure rules of `_rules/poll_rules.py`: backoff, jitter, deadlines and budgets."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastapi_jobpoller import Done, Failed, Pending, PollState
from fastapi_jobpoller._rules.poll_rules import (
    AttemptError,
    after_attempt,
    backoff_delay,
    timed_out,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_poll(**values: Any) -> dict[str, Any]:
    """Return a claimed poll row as the dispatcher hands it to the rules."""
    row: dict[str, Any] = {
        "attempts": 1,
        "consecutive_errors": 0,
        "interval": 1.0,
        "backoff_factor": 1.0,
        "max_interval": None,
        "jitter": 0.0,
        "timeout": None,
        "deadline": None,
        "max_attempts": None,
        "max_errors": 5,
        "progress": None,
    }
    row.update(values)
    return row


def rng() -> random.Random:
    return random.Random(1234)


# -- backoff and jitter ------------------------------------------------------------------


def test_the_interval_grows_by_the_backoff_factor_per_attempt() -> None:
    poll = make_poll(interval=1.0, backoff_factor=2.0)
    delays = [backoff_delay(poll, attempts, rng()) for attempts in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_backoff_factor_of_one_keeps_the_interval_fixed() -> None:
    poll = make_poll(interval=3.0, backoff_factor=1.0)
    assert {backoff_delay(poll, attempts, rng()) for attempts in (1, 2, 10, 1000)} == {3.0}


def test_the_backed_off_interval_stops_at_max_interval() -> None:
    poll = make_poll(interval=1.0, backoff_factor=2.0, max_interval=5.0)
    delays = [backoff_delay(poll, attempts, rng()) for attempts in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_without_max_interval_the_backoff_is_capped_at_one_day() -> None:
    poll = make_poll(interval=10.0, backoff_factor=10.0, max_interval=None)
    assert backoff_delay(poll, 4, rng()) == 10_000.0
    assert backoff_delay(poll, 6, rng()) == 86_400.0
    assert backoff_delay(poll, 50, rng()) == 86_400.0


def test_a_poll_after_a_million_attempts_still_gets_the_capped_interval() -> None:
    poll = make_poll(interval=1.0, backoff_factor=100.0, max_interval=60.0)
    assert backoff_delay(poll, 1_000_000, rng()) == 60.0


def test_jitter_adds_a_varying_amount_between_zero_and_the_jitter() -> None:
    poll = make_poll(interval=2.0, backoff_factor=1.0, jitter=0.5)
    generator = random.Random(42)
    samples = [backoff_delay(poll, 1, generator) - 2.0 for _ in range(2000)]
    assert all(0.0 <= added <= 0.5 for added in samples)
    assert len(set(samples)) > 1900
    # Spread over the whole range, not bunched at one end.
    assert min(samples) < 0.05
    assert max(samples) > 0.45


def test_jitter_is_added_on_top_of_the_capped_interval() -> None:
    poll = make_poll(interval=1.0, backoff_factor=2.0, max_interval=4.0, jitter=1.0)
    generator = random.Random(7)
    samples = [backoff_delay(poll, 10, generator) for _ in range(500)]
    assert all(4.0 <= delay <= 5.0 for delay in samples)
    assert max(samples) > 4.5


def test_jitter_comes_from_the_given_random_generator() -> None:
    poll = make_poll(interval=1.0, jitter=1.0)
    first = [backoff_delay(poll, 1, random.Random(99)) for _ in range(3)]
    again = [backoff_delay(poll, 1, random.Random(99)) for _ in range(3)]
    assert first == again
    assert backoff_delay(poll, 1, random.Random(100)) != first[0]


# -- pending outcomes --------------------------------------------------------------------


def test_a_pending_outcome_schedules_the_next_attempt_after_the_backed_off_interval() -> None:
    poll = make_poll(attempts=3, interval=1.0, backoff_factor=2.0)
    transition = after_attempt(poll, Pending(progress={"pct": 40}), NOW, rng())
    assert transition.state is PollState.PENDING
    assert not transition.is_terminal
    assert transition.next_poll_at == NOW + timedelta(seconds=4.0)
    assert transition.progress == {"pct": 40}
    assert transition.error is None


def test_retry_after_overrides_the_computed_interval() -> None:
    poll = make_poll(attempts=5, interval=1.0, backoff_factor=2.0, jitter=10.0)
    transition = after_attempt(poll, Pending(retry_after=7.0), NOW, rng())
    assert transition.next_poll_at == NOW + timedelta(seconds=7.0)


def test_a_retry_after_of_zero_asks_for_the_next_attempt_right_away() -> None:
    poll = make_poll(interval=30.0)
    transition = after_attempt(poll, Pending(retry_after=0), NOW, rng())
    assert transition.next_poll_at == NOW


def test_retry_after_may_exceed_max_interval() -> None:
    poll = make_poll(interval=1.0, max_interval=2.0)
    transition = after_attempt(poll, Pending(retry_after=60.0), NOW, rng())
    assert transition.next_poll_at == NOW + timedelta(seconds=60.0)


def test_the_next_attempt_is_moved_back_to_the_deadline_when_it_would_fall_after_it() -> None:
    deadline = NOW + timedelta(seconds=3)
    poll = make_poll(interval=10.0, timeout=100.0, deadline=deadline)
    transition = after_attempt(poll, Pending(), NOW, rng())
    assert transition.state is PollState.PENDING
    assert transition.next_poll_at == deadline


def test_retry_after_is_clipped_at_the_deadline_too() -> None:
    deadline = NOW + timedelta(seconds=3)
    poll = make_poll(interval=1.0, timeout=100.0, deadline=deadline)
    transition = after_attempt(poll, Pending(retry_after=50.0), NOW, rng())
    assert transition.next_poll_at == deadline


def test_a_next_attempt_before_the_deadline_is_left_alone() -> None:
    poll = make_poll(interval=2.0, timeout=100.0, deadline=NOW + timedelta(seconds=3))
    transition = after_attempt(poll, Pending(), NOW, rng())
    assert transition.next_poll_at == NOW + timedelta(seconds=2.0)


# -- timeout -----------------------------------------------------------------------------


def test_timed_out_is_none_before_the_deadline_and_without_one() -> None:
    assert timed_out(make_poll(), NOW) is None
    poll = make_poll(timeout=10.0, deadline=NOW + timedelta(microseconds=1))
    assert timed_out(poll, NOW) is None


def test_a_poll_times_out_at_its_deadline_keeping_its_progress() -> None:
    poll = make_poll(timeout=10.0, deadline=NOW, progress=70, consecutive_errors=2)
    transition = timed_out(poll, NOW)
    assert transition is not None
    assert transition.state is PollState.TIMED_OUT
    assert transition.is_terminal
    assert transition.next_poll_at is None
    assert transition.progress == 70
    assert transition.consecutive_errors == 2
    assert transition.error == "timed out after 10 s"


def test_a_pending_outcome_after_the_deadline_times_the_poll_out() -> None:
    poll = make_poll(timeout=5.0, deadline=NOW - timedelta(seconds=1), progress=10)
    transition = after_attempt(poll, Pending(progress=90), NOW, rng())
    assert transition.state is PollState.TIMED_OUT
    assert transition.next_poll_at is None
    assert transition.progress == 90
    assert transition.error == "timed out after 5 s"


def test_an_error_after_the_deadline_times_the_poll_out_within_the_error_budget() -> None:
    poll = make_poll(timeout=5.0, deadline=NOW, max_errors=3)
    transition = after_attempt(poll, AttemptError("boom"), NOW, rng())
    assert transition.state is PollState.TIMED_OUT
    assert transition.consecutive_errors == 1


def test_done_after_the_deadline_still_succeeds() -> None:
    poll = make_poll(timeout=5.0, deadline=NOW - timedelta(seconds=1))
    transition = after_attempt(poll, Done(result="late but done"), NOW, rng())
    assert transition.state is PollState.SUCCEEDED
    assert transition.result == "late but done"


# -- attempt budget ----------------------------------------------------------------------


def test_pending_at_the_last_allowed_attempt_fails_the_poll() -> None:
    poll = make_poll(attempts=3, max_attempts=3, progress=1)
    transition = after_attempt(poll, Pending(progress=2), NOW, rng())
    assert transition.state is PollState.FAILED
    assert transition.next_poll_at is None
    assert transition.progress == 2
    assert transition.error == "not finished after 3 attempts"


def test_pending_before_the_last_allowed_attempt_keeps_polling() -> None:
    poll = make_poll(attempts=2, max_attempts=3)
    assert after_attempt(poll, Pending(), NOW, rng()).state is PollState.PENDING


def test_an_error_at_the_last_allowed_attempt_is_named_in_the_failure() -> None:
    poll = make_poll(attempts=3, max_attempts=3, max_errors=10)
    transition = after_attempt(poll, AttemptError("ValueError: nope"), NOW, rng())
    assert transition.state is PollState.FAILED
    assert transition.error == "not finished after 3 attempts; last error: ValueError: nope"


def test_done_at_the_last_allowed_attempt_succeeds() -> None:
    poll = make_poll(attempts=3, max_attempts=3)
    assert after_attempt(poll, Done(), NOW, rng()).state is PollState.SUCCEEDED


# -- error budget ------------------------------------------------------------------------


@pytest.mark.parametrize("max_errors", [0, 1, 3])
def test_max_errors_consecutive_errors_are_tolerated_and_one_more_fails(max_errors: int) -> None:
    poll = make_poll(max_errors=max_errors)
    for expected in range(1, max_errors + 1):
        transition = after_attempt(poll, AttemptError(f"error {expected}"), NOW, rng())
        assert transition.state is PollState.PENDING
        assert transition.consecutive_errors == expected
        assert transition.error == f"error {expected}"
        assert transition.next_poll_at == NOW + timedelta(seconds=1.0)
        poll = make_poll(max_errors=max_errors, consecutive_errors=expected)
    transition = after_attempt(poll, AttemptError("the last straw"), NOW, rng())
    assert transition.state is PollState.FAILED
    assert transition.consecutive_errors == max_errors + 1
    assert transition.next_poll_at is None
    assert transition.error == (
        f"gave up after {max_errors + 1} consecutive errors; last: the last straw"
    )


def test_a_pending_outcome_resets_the_consecutive_error_count() -> None:
    poll = make_poll(max_errors=2, consecutive_errors=2)
    transition = after_attempt(poll, Pending(progress="back"), NOW, rng())
    assert transition.state is PollState.PENDING
    assert transition.consecutive_errors == 0
    assert transition.error is None
    # The budget is whole again: two more errors are tolerated.
    poll = make_poll(max_errors=2, consecutive_errors=transition.consecutive_errors)
    assert after_attempt(poll, AttemptError("x"), NOW, rng()).state is PollState.PENDING


def test_an_error_keeps_the_progress_of_the_last_pending_outcome() -> None:
    poll = make_poll(progress={"stage": "copying"})
    transition = after_attempt(poll, AttemptError("timeout"), NOW, rng())
    assert transition.progress == {"stage": "copying"}


def test_an_error_is_retried_after_the_backed_off_interval_not_a_retry_after() -> None:
    poll = make_poll(attempts=2, interval=1.0, backoff_factor=3.0)
    transition = after_attempt(poll, AttemptError("x"), NOW, rng())
    assert transition.next_poll_at == NOW + timedelta(seconds=3.0)


# -- done and failed ---------------------------------------------------------------------


def test_done_succeeds_with_its_result_and_keeps_the_progress() -> None:
    poll = make_poll(consecutive_errors=3, progress=99)
    transition = after_attempt(poll, Done(result={"url": "s3://x"}), NOW, rng())
    assert transition.state is PollState.SUCCEEDED
    assert transition.is_terminal
    assert transition.result == {"url": "s3://x"}
    assert transition.progress == 99
    assert transition.consecutive_errors == 0
    assert transition.next_poll_at is None
    assert transition.error is None


def test_failed_ends_the_poll_with_its_reason_and_result() -> None:
    poll = make_poll(consecutive_errors=1, progress=5)
    transition = after_attempt(poll, Failed(reason="quota exceeded", result={"n": 1}), NOW, rng())
    assert transition.state is PollState.FAILED
    assert transition.is_terminal
    assert transition.error == "quota exceeded"
    assert transition.result == {"n": 1}
    assert transition.progress == 5
    assert transition.consecutive_errors == 0
    assert transition.next_poll_at is None


def test_failed_ends_the_poll_even_with_attempts_and_errors_left() -> None:
    poll = make_poll(attempts=1, max_attempts=100, max_errors=100)
    assert after_attempt(poll, Failed(), NOW, rng()).state is PollState.FAILED
