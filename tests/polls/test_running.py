"""Running poll functions, on every database: outcomes, errors, budgets, timeouts.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from fastapi_jobpoller import Done, Failed, JobPoller, Pending, PollState
from tests.conftest import PollerFactory
from tests.helpers import WAIT, ended, poll_until, sqlite_only, wait_event

pytestmark = pytest.mark.anyio


# -- running poll functions --------------------------------------------------------------


async def test_a_sync_poll_function_runs_on_a_worker_thread(make_poller: PollerFactory) -> None:
    poller = make_poller()
    threads: list[str] = []

    @poller.poll_function()
    def twice(job: str) -> Pending | Done:
        threads.append(threading.current_thread().name)
        return Done(result=f"{job} done") if len(threads) == 2 else Pending()

    async with poller:
        poll = await poller.start_poll("twice", {"job": "export"}, interval=0.01)
        final = await poller.wait_for_poll(poll.id, timeout=WAIT)
    assert final.state is PollState.SUCCEEDED
    assert final.result == "export done"
    assert final.attempts == 2
    assert final.finished_at is not None
    assert final.next_poll_at is None
    assert len(threads) == 2
    assert all(name.startswith("jobpoller-worker") for name in threads)


@sqlite_only
async def test_an_async_poll_function_is_awaited_on_the_event_loop(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    loop = asyncio.get_running_loop()
    finished_awaits: list[bool] = []

    @poller.poll_function()
    async def awaited(job: str) -> Pending | Done:
        assert asyncio.get_running_loop() is loop
        await asyncio.sleep(0.01)
        finished_awaits.append(True)
        return Done(result=job) if len(finished_awaits) == 2 else Pending()

    async with poller:
        poll = await poller.start_poll("awaited", {"job": "x"}, interval=0.01)
        final = await ended(poller, poll.id)
    assert final.state is PollState.SUCCEEDED, final.error
    assert final.result == "x"
    assert finished_awaits == [True, True]


async def test_the_progress_of_a_pending_outcome_is_stored(make_poller: PollerFactory) -> None:
    poller = make_poller()
    second_started = asyncio.Event()
    finish = asyncio.Event()
    calls = 0

    @poller.poll_function()
    async def staged() -> Pending | Done:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Pending(progress={"stage": "copying", "pct": 40})
        second_started.set()
        await finish.wait()
        return Done(result="copied")

    async with poller:
        poll = await poller.start_poll("staged", interval=0.01)
        await wait_event(second_started)
        during = await poller.get_poll(poll.id)
        finish.set()
        final = await ended(poller, poll.id)
    assert during.state is PollState.RUNNING
    assert during.progress == {"stage": "copying", "pct": 40}
    assert during.attempts == 2
    assert final.state is PollState.SUCCEEDED
    assert final.progress == {"stage": "copying", "pct": 40}
    assert final.result == "copied"


async def test_failed_ends_the_poll_with_its_reason_and_result(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def refuse() -> Failed:
        return Failed(reason="the export was rejected", result={"code": 422})

    async with poller:
        poll = await poller.start_poll("refuse", interval=0.01, max_errors=5, max_attempts=10)
        final = await ended(poller, poll.id)
    assert final.state is PollState.FAILED
    assert final.error == "the export was rejected"
    assert final.result == {"code": 422}
    assert final.attempts == 1


async def test_exceptions_are_retried_and_the_poll_fails_after_its_error_budget(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def flaky() -> Done:
        nonlocal calls
        calls += 1
        raise ValueError(f"boom {calls}")

    async with poller:
        poll = await poller.start_poll("flaky", interval=0.01, max_errors=2)
        final = await ended(poller, poll.id)
    assert final.state is PollState.FAILED
    assert calls == 3
    assert final.attempts == 3
    assert final.consecutive_errors == 3
    assert final.error == "gave up after 3 consecutive errors; last: ValueError: boom 3"


async def test_the_last_exception_is_shown_while_the_poll_keeps_trying(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    second_started = asyncio.Event()
    finish = asyncio.Event()
    calls = 0

    @poller.poll_function()
    async def recovering() -> Done:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("upstream 503")
        second_started.set()
        await finish.wait()
        return Done()

    async with poller:
        poll = await poller.start_poll("recovering", interval=0.01, max_errors=3)
        await wait_event(second_started)
        during = await poller.get_poll(poll.id)
        finish.set()
        final = await ended(poller, poll.id)
    assert during.consecutive_errors == 1
    assert during.error == "RuntimeError: upstream 503"
    assert final.state is PollState.SUCCEEDED
    assert final.consecutive_errors == 0


async def test_a_pending_outcome_between_exceptions_restores_the_error_budget(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    script: list[str] = ["raise", "raise", "pending", "raise", "raise", "done"]
    seen: list[str] = []

    @poller.poll_function()
    def scripted() -> Pending | Done:
        step = script[len(seen)]
        seen.append(step)
        if step == "raise":
            raise ConnectionError("reset")
        return Done() if step == "done" else Pending()

    async with poller:
        poll = await poller.start_poll("scripted", interval=0.01, max_errors=2)
        final = await ended(poller, poll.id)
    assert final.state is PollState.SUCCEEDED, final.error
    assert seen == script
    assert final.attempts == 6


async def test_a_poll_still_pending_after_max_attempts_fails(make_poller: PollerFactory) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def never_done() -> Pending:
        nonlocal calls
        calls += 1
        return Pending(progress=calls)

    async with poller:
        poll = await poller.start_poll("never_done", interval=0.01, max_attempts=3)
        final = await ended(poller, poll.id)
    assert final.state is PollState.FAILED
    assert final.error == "not finished after 3 attempts"
    assert final.attempts == 3
    assert final.progress == 3
    assert calls == 3


@sqlite_only
async def test_a_poll_function_returning_something_else_than_an_outcome_is_an_error(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def returns_a_dict() -> object:
        return {"status": "done"}

    async with poller:
        poll = await poller.start_poll("returns_a_dict", interval=0.01, max_errors=0)
        final = await ended(poller, poll.id)
    assert final.state is PollState.FAILED
    assert final.result is None
    assert final.error is not None
    assert "poll functions return Pending(), Done() or Failed(), not dict" in final.error


@sqlite_only
async def test_an_outcome_holding_a_value_that_is_not_json_is_an_error(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def returns_an_object() -> Pending:
        return Pending(progress=object())

    async with poller:
        poll = await poller.start_poll("returns_an_object", interval=0.01, max_errors=0)
        final = await ended(poller, poll.id)
    assert final.state is PollState.FAILED
    assert final.error is not None
    assert "Pending holds a value that is not JSON" in final.error


# -- timeouts ----------------------------------------------------------------------------


async def test_a_poll_times_out_at_the_deadline_set_when_it_was_submitted(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def forever() -> Pending:
        return Pending(progress="still working")

    async with poller:
        poll = await poller.start_poll("forever", interval=0.05, timeout=0.3)
        final = await ended(poller, poll.id)
    assert poll.deadline == poll.created_at + timedelta(seconds=0.3)
    assert final.state is PollState.TIMED_OUT
    assert final.error == "timed out after 0.3 s"
    assert final.progress == "still working"
    assert final.deadline == poll.deadline
    assert final.finished_at is not None
    assert final.finished_at >= poll.created_at + timedelta(seconds=0.3)


async def test_a_restart_does_not_reset_a_polls_timeout(make_poller: PollerFactory) -> None:
    # Long enough for two attempts before it even on a loaded CI machine (1.2 s once saw
    # none there); a timeout counted from the restart would still end past the bound below.
    timeout = 3.0

    def register(poller: JobPoller) -> None:
        @poller.poll_function()
        def forever() -> Pending:
            return Pending()

    first = make_poller()
    register(first)
    async with first:
        poll = await first.start_poll("forever", interval=0.05, timeout=timeout)
        before = await poll_until(first, poll.id, lambda p: p.attempts >= 2)
    assert poll.deadline is not None
    # Stay down until a second before the deadline: a timeout counted from the restart
    # would then end about two seconds after the stored one, room enough for a loaded
    # machine to record the stored one late.
    down_until = poll.deadline - timedelta(seconds=1)
    await anyio.sleep(max((down_until - datetime.now(UTC)).total_seconds(), 0.3))
    restarted_at = datetime.now(UTC)
    second = make_poller()
    register(second)
    async with second:
        final = await ended(second, poll.id)
    assert final.state is PollState.TIMED_OUT
    assert not before.is_terminal
    assert final.deadline == poll.deadline
    assert final.finished_at is not None
    assert final.finished_at >= poll.deadline
    assert final.finished_at < restarted_at + timedelta(seconds=timeout)
