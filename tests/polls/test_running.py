"""Per-request polls end to end, through `JobPoller`, on every database.

Tests marked `sqlite_only` run on SQLite alone (see tests/polls/__init__.py).
"""

import asyncio
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from fastapi_jobpoller import (
    Done,
    Event,
    Failed,
    FunctionNotFoundError,
    InvalidArgumentsError,
    InvalidStateError,
    JobPoller,
    Pending,
    PollConflictError,
    PollInfo,
    PollNotFoundError,
    PollState,
)
from tests.conftest import PollerFactory
from tests.helpers import QUIET, WAIT, ended, poll_until, sqlite_only, wait_event, wait_thread_event
from tests.support import process_functions

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
    # Stay down a while: a timeout counted from the restart would end this much later.
    await anyio.sleep(0.3)
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


# -- submitting the same poll again ----------------------------------------------------


async def test_submitting_the_same_id_and_arguments_again_returns_the_stored_poll(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def check(order: int) -> Done:
        return Done()

    async with poller:
        first, created_first = await poller.submit_poll(
            "check", {"order": 7}, poll_id="req-1", delay=60
        )
        # The same arguments in another but equivalent form, and other options.
        again, created_again = await poller.submit_poll(
            "check", {"order": "7"}, poll_id="req-1", delay=1, interval=3
        )
        plain = await poller.start_poll("check", {"order": 7}, poll_id="req-1")
        listed = await poller.list_polls()
    assert created_first is True
    assert created_again is False
    assert again.id == plain.id == "req-1"
    assert again.created_at == first.created_at == plain.created_at
    assert again.next_poll_at == first.next_poll_at
    assert again.interval == first.interval
    assert [p.id for p in listed] == ["req-1"]


async def test_submitting_an_ended_poll_again_returns_it_without_running_it_again(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def once(order: int) -> Done:
        nonlocal calls
        calls += 1
        return Done(result=order)

    async with poller:
        poll = await poller.start_poll("once", {"order": 1}, poll_id="req-2", interval=0.01)
        final = await ended(poller, poll.id)
        again, created = await poller.submit_poll("once", {"order": 1}, poll_id="req-2")
        await anyio.sleep(QUIET)
        later = await poller.get_poll("req-2")
    assert final.state is PollState.SUCCEEDED
    assert created is False
    assert again.state is PollState.SUCCEEDED
    assert again.result == 1
    assert later.attempts == 1
    assert calls == 1


async def test_the_same_id_with_other_arguments_or_another_function_is_a_conflict(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def check(order: int) -> Done:
        return Done()

    @poller.poll_function()
    def other(order: int) -> Done:
        return Done()

    async with poller:
        await poller.start_poll("check", {"order": 1}, poll_id="req-3", delay=60)
        with pytest.raises(PollConflictError) as raised:
            await poller.start_poll("check", {"order": 2}, poll_id="req-3")
        with pytest.raises(PollConflictError):
            await poller.start_poll("other", {"order": 1}, poll_id="req-3")
        stored = await poller.get_poll("req-3")
    assert raised.value.code == "poll_conflict"
    assert stored.function == "check"
    assert stored.arguments == {"order": 1}


# -- cancelling --------------------------------------------------------------------------


async def test_a_cancelled_poll_runs_no_more_attempts(make_poller: PollerFactory) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def slow_steps() -> Pending:
        nonlocal calls
        calls += 1
        # Come back soon: without the cancel, a second attempt would run within QUIET.
        return Pending(progress=calls, retry_after=0.1)

    async with poller:
        poll = await poller.start_poll("slow_steps", interval=0.01)
        await poll_until(
            poller, poll.id, lambda p: p.state is PollState.PENDING and p.attempts == 1
        )
        cancelled = await poller.cancel_poll(poll.id)
        await anyio.sleep(QUIET)
        later = await poller.get_poll(poll.id)
    assert cancelled.state is PollState.CANCELLED
    assert cancelled.error == "cancelled"
    assert cancelled.finished_at is not None
    assert cancelled.next_poll_at is None
    # Normally 1; 2 only if a slow database let the next attempt start before the cancel
    # landed (that attempt's outcome is then dropped). Either way: nothing after it.
    assert cancelled.attempts in (1, 2)
    assert later.state is PollState.CANCELLED
    assert later.attempts == cancelled.attempts
    assert later.progress == cancelled.progress
    assert calls == cancelled.attempts


async def test_a_poll_cancelled_before_its_first_attempt_never_runs(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()
    calls = 0

    @poller.poll_function()
    def never() -> Done:
        nonlocal calls
        calls += 1
        return Done()

    delay = 0.3
    async with poller:
        poll = await poller.start_poll("never", delay=delay)
        cancelled = await poller.cancel_poll(poll.id)
        # Past the time the first attempt was due.
        await anyio.sleep(delay + QUIET)
        later = await poller.get_poll(poll.id)
    assert cancelled.attempts == 0
    assert later.state is PollState.CANCELLED
    assert later.attempts == 0
    assert calls == 0


# A late Done is refused by the terminal write, a late Pending by the pending write.
@pytest.mark.parametrize("outcome", ["done", "pending"])
async def test_cancelling_during_an_attempt_discards_the_attempts_outcome(
    make_poller: PollerFactory, outcome: str
) -> None:
    poller = make_poller()
    started = asyncio.Event()
    release = asyncio.Event()
    returned = asyncio.Event()
    calls = 0
    callbacks: list[PollState] = []

    @poller.poll_function()
    async def in_flight() -> Pending | Done:
        nonlocal calls
        calls += 1
        started.set()
        try:
            await release.wait()
            return Pending(progress="late progress") if outcome == "pending" else Done("late")
        finally:
            returned.set()

    @poller.callback()
    def notify(poll: PollInfo) -> None:
        callbacks.append(poll.state)

    async with poller:
        poll = await poller.start_poll(
            "in_flight", interval=0.01, max_errors=0, callbacks=("notify",)
        )
        await wait_event(started)
        cancelled = await poller.cancel_poll(poll.id)
        release.set()
        await wait_event(returned)
        await anyio.sleep(QUIET)
        final = await ended(poller, poll.id)
    assert cancelled.state is PollState.CANCELLED
    assert final.state is PollState.CANCELLED
    assert final.error == "cancelled"
    assert final.result is None
    assert final.progress is None
    assert final.attempts == 1
    assert calls == 1
    assert callbacks == [PollState.CANCELLED]


async def test_cancelling_a_poll_that_has_ended_is_an_invalid_state(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finish() -> Done:
        return Done(result="kept")

    async with poller:
        poll = await poller.start_poll("finish", interval=0.01)
        await ended(poller, poll.id)
        with pytest.raises(InvalidStateError) as raised:
            await poller.cancel_poll(poll.id)
        after = await poller.get_poll(poll.id)
    assert raised.value.code == "invalid_state"
    assert after.state is PollState.SUCCEEDED
    assert after.result == "kept"


async def test_an_unknown_poll_id_is_not_found(make_poller: PollerFactory) -> None:
    async with make_poller() as poller:
        with pytest.raises(PollNotFoundError) as raised:
            await poller.get_poll("no-such-poll")
        with pytest.raises(PollNotFoundError):
            await poller.cancel_poll("no-such-poll")
        with pytest.raises(PollNotFoundError):
            await poller.wait_for_poll("no-such-poll", timeout=1)
    assert raised.value.code == "poll_not_found"


# -- listing -----------------------------------------------------------------------------


async def test_list_polls_filters_by_state_and_function(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finisher() -> Done:
        return Done()

    @poller.poll_function()
    def waiter() -> Done:
        return Done()

    async with poller:
        done = [(await poller.start_poll("finisher", interval=0.01)).id for _ in range(2)]
        waiting = (await poller.start_poll("waiter", delay=60)).id
        cancelled = (await poller.start_poll("waiter", delay=60)).id
        await poller.cancel_poll(cancelled)
        for poll_id in done:
            await ended(poller, poll_id)

        async def ids(**filters: object) -> set[str]:
            return {p.id for p in await poller.list_polls(**filters)}  # type: ignore[arg-type]

        assert await ids() == {*done, waiting, cancelled}
        assert await ids(state=PollState.SUCCEEDED) == set(done)
        assert await ids(state=PollState.PENDING) == {waiting}
        assert await ids(state=[PollState.PENDING, PollState.CANCELLED]) == {waiting, cancelled}
        assert await ids(function="waiter") == {waiting, cancelled}
        assert await ids(function="finisher", state=PollState.SUCCEEDED) == set(done)
        assert await ids(function="finisher", state=PollState.CANCELLED) == set()
        assert await ids(function="nothing") == set()


async def test_list_polls_pages_through_polls_newest_first(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def idle() -> Done:
        return Done()

    async with poller:
        created = [(await poller.start_poll("idle", delay=60)).id for _ in range(5)]
        everything = [p.id for p in await poller.list_polls()]
        pages = [
            [p.id for p in await poller.list_polls(limit=2, offset=offset)]
            for offset in (0, 2, 4, 6)
        ]
        with pytest.raises(InvalidArgumentsError):
            await poller.list_polls(limit=0)
        with pytest.raises(InvalidArgumentsError):
            await poller.list_polls(offset=-1)
    assert everything == created[::-1]
    assert pages == [everything[0:2], everything[2:4], everything[4:5], []]


# -- terminal callbacks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ending",
    [PollState.SUCCEEDED, PollState.FAILED, PollState.TIMED_OUT, PollState.CANCELLED],
)
async def test_sync_and_async_terminal_callbacks_are_called_once_with_the_final_poll(
    make_poller: PollerFactory, ending: PollState
) -> None:
    poller = make_poller()
    received: list[tuple[str, PollInfo]] = []

    @poller.poll_function()
    def ends() -> Pending | Done | Failed:
        if ending is PollState.SUCCEEDED:
            return Done(result="ok")
        if ending is PollState.FAILED:
            return Failed(reason="no")
        return Pending()

    @poller.callback()
    def sync_hook(poll: PollInfo) -> None:
        assert threading.current_thread() is not threading.main_thread()
        received.append(("sync", poll))

    @poller.callback()
    async def async_hook(poll: PollInfo) -> None:
        await asyncio.sleep(0)
        received.append(("async", poll))

    async with poller:
        poll = await poller.start_poll(
            "ends",
            interval=0.01,
            timeout=0.2 if ending is PollState.TIMED_OUT else None,
            delay=60 if ending is PollState.CANCELLED else 0,
            callbacks=("sync_hook", "async_hook"),
        )
        if ending is PollState.CANCELLED:
            await poller.cancel_poll(poll.id)
        final = await ended(poller, poll.id)
        await anyio.sleep(QUIET)
    assert final.state is ending
    assert [(kind, p.id, p.state) for kind, p in received] == [
        ("sync", poll.id, ending),
        ("async", poll.id, ending),
    ]
    for _, info in received:
        assert info.is_terminal
        assert info.finished_at is not None
        assert info.error == final.error
        assert info.result == final.result


async def test_a_callback_that_raises_is_delivered_again_later(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(callback_retry_seconds=0.1)
    received: list[PollState] = []

    @poller.poll_function()
    def finish() -> Done:
        return Done(result="r")

    @poller.callback()
    def flaky_hook(poll: PollInfo) -> None:
        received.append(poll.state)
        if len(received) == 1:
            raise ConnectionError("webhook down")

    async with poller:
        poll = await poller.start_poll("finish", interval=0.01, callbacks=("flaky_hook",))
        final = await ended(poller, poll.id)
        await anyio.sleep(QUIET)
    assert received == [PollState.SUCCEEDED, PollState.SUCCEEDED]
    assert final.state is PollState.SUCCEEDED
    assert final.result == "r"


@sqlite_only
async def test_an_unknown_callback_name_is_refused_at_submit(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.poll_function()
    def finish() -> Done:
        return Done()

    async with poller:
        with pytest.raises(FunctionNotFoundError, match="'nope'"):
            await poller.start_poll("finish", callbacks=("nope",))
        assert await poller.list_polls() == []


@sqlite_only
async def test_an_unknown_poll_function_is_refused_at_submit(make_poller: PollerFactory) -> None:
    poller = make_poller()

    @poller.callback()
    def hook(poll: PollInfo) -> None:
        pass

    async with poller:
        with pytest.raises(FunctionNotFoundError, match="'missing'"):
            await poller.start_poll("missing")
        # A callback is not a poll function: names have one namespace per kind.
        with pytest.raises(FunctionNotFoundError):
            await poller.start_poll("hook")
        assert await poller.list_polls() == []


# -- functions this process does not register ------------------------------------------


async def test_a_poll_of_an_unregistered_function_waits_for_a_process_that_registers_it(
    make_poller: PollerFactory,
) -> None:
    calls = 0

    def register(poller: JobPoller) -> None:
        @poller.poll_function()
        def added_later() -> Done:
            nonlocal calls
            calls += 1
            return Done(result="ran")

    submitter = make_poller()
    register(submitter)
    async with submitter:
        poll = await submitter.start_poll("added_later", interval=0.01, delay=0.5)

    # An older deploy: it does not know the function.
    older = make_poller(unknown_function_retry_seconds=0.05)
    async with older:
        seen = await poll_until(older, poll.id, lambda p: p.error is not None)
        await anyio.sleep(QUIET)  # several more looks at it
        still = await older.get_poll(poll.id)
        listed = [p.id for p in await older.list_polls()]
    # Pending, or running while the older process looks at it again.
    assert not seen.is_terminal
    assert seen.error is not None
    assert "'added_later' is not registered" in seen.error
    assert not still.is_terminal
    assert listed == [poll.id]
    assert calls == 0

    newer = make_poller()
    register(newer)
    async with newer:
        final = await ended(newer, poll.id)
    assert final.state is PollState.SUCCEEDED
    assert final.result == "ran"
    assert calls == 1


# -- limits and executors ----------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("function_kind", ["sync", "async"])
async def test_max_concurrency_limits_concurrent_attempts_of_a_function(
    make_poller: PollerFactory, function_kind: str
) -> None:
    poller = make_poller()
    lock = threading.Lock()
    running = 0
    peak = 0

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    if function_kind == "sync":

        @poller.poll_function("limited", max_concurrency=2)
        def limited_sync() -> Done:
            enter()
            try:
                time.sleep(0.2)
            finally:
                leave()
            return Done()

    else:

        @poller.poll_function("limited", max_concurrency=2)
        async def limited_async() -> Done:
            enter()
            try:
                await asyncio.sleep(0.2)
            finally:
                leave()
            return Done()

    async with poller:
        polls = [await poller.start_poll("limited", interval=0.01) for _ in range(6)]
        finals = [await ended(poller, poll.id) for poll in polls]
    assert all(final.state is PollState.SUCCEEDED for final in finals)
    assert peak == 2


@sqlite_only
@pytest.mark.processes
async def test_a_process_executor_runs_the_function_in_another_process(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(process_pool_size=1)
    poller.poll_function(executor="process")(process_functions.report_pid)
    async with poller:
        poll = await poller.start_poll("report_pid", {"label": "child"}, interval=0.01)
        final = await poller.wait_for_poll(poll.id, timeout=60)
    assert final.state is PollState.SUCCEEDED, final.error
    assert final.result["label"] == "child"
    assert isinstance(final.result["pid"], int)
    assert final.result["pid"] != os.getpid()


@sqlite_only
@pytest.mark.parametrize("function_kind", ["sync", "async"])
async def test_an_attempt_running_past_the_attempt_timeout_is_an_error(
    make_poller: PollerFactory, function_kind: str
) -> None:
    poller = make_poller(attempt_timeout=0.2)
    release = threading.Event()

    if function_kind == "sync":

        @poller.poll_function("hangs")
        def hangs_sync() -> Done:
            release.wait(WAIT)
            return Done()

    else:

        @poller.poll_function("hangs")
        async def hangs_async() -> Done:
            await asyncio.sleep(WAIT)
            return Done()

    try:
        async with poller:
            poll = await poller.start_poll("hangs", interval=0.01, max_errors=0)
            final = await ended(poller, poll.id)
    finally:
        release.set()
    assert final.state is PollState.FAILED
    assert final.error == "gave up after 1 consecutive errors; last: attempt timed out after 0.2 s"


# -- shutdown and restart ----------------------------------------------------------------


async def test_shutdown_leaves_a_hanging_attempt_after_the_grace_period_for_the_next_poller(
    make_poller: PollerFactory,
) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def register(poller: JobPoller) -> None:
        @poller.poll_function()
        def stuck_once() -> Done:
            calls.append(len(calls) + 1)
            if len(calls) == 1:
                started.set()
                release.wait(WAIT)
                return Done(result="from the abandoned attempt")
            return Done(result="from the next poller")

    grace = 0.2
    # A lease far longer than any wait here: the next poller can only run the poll this
    # soon because shutdown hands the lease back.
    first = make_poller(lease_seconds=60.0)
    register(first)
    try:
        await first.start()
        try:
            poll = await first.start_poll("stuck_once", interval=0.01)
            await wait_thread_event(started)
        finally:
            stopping = time.monotonic()
            with anyio.fail_after(WAIT):
                await first.shutdown(grace=grace)
            stopped_after = time.monotonic() - stopping
        assert not release.is_set()
        # The hanging attempt is left behind, not waited for (the margin covers handing
        # the lease back and closing the pools, never the `WAIT` the attempt would take).
        assert stopped_after < grace + 3.0

        second = make_poller()
        register(second)
        async with second:
            final = await ended(second, poll.id)
    finally:
        release.set()
    assert final.state is PollState.SUCCEEDED
    assert final.result == "from the next poller"
    assert final.attempts == 2
    assert calls == [1, 2]


async def test_a_restart_resumes_pending_polls(make_poller: PollerFactory) -> None:
    first = make_poller()

    @first.poll_function("steps")
    def steps_before(order: int) -> Pending:
        return Pending(progress=f"order {order} waiting")

    async with first:
        polls = [await first.start_poll("steps", {"order": n}, interval=0.01) for n in range(3)]
        before = [await poll_until(first, p.id, lambda p: p.attempts >= 2) for p in polls]

    second = make_poller()

    @second.poll_function("steps")
    def steps_after(order: int) -> Done:
        return Done(result=order)

    async with second:
        finals = [await ended(second, p.id) for p in polls]
    assert [f.state for f in finals] == [PollState.SUCCEEDED] * 3
    assert [f.result for f in finals] == [0, 1, 2]
    assert [f.progress for f in finals] == [f"order {n} waiting" for n in range(3)]
    assert all(f.attempts > b.attempts for f, b in zip(finals, before, strict=True))


postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@postgresql_only
async def test_only_polls_due_before_the_next_idle_look_wake_the_other_processes(
    make_poller: PollerFactory, database_url: str, table_prefix: str
) -> None:
    """A new poll wakes the other processes (NOTIFY) only if it may come due before they
    look anyway (twice idle_wait_seconds); later ones cost the submit no notification.
    Every one of them is still announced to listeners as submitted."""
    import psycopg

    poller = make_poller(idle_wait_seconds=1.0)
    delays = [5.0, 2.0, 1.9, 0.0]
    submitted: list[str] = []
    all_submitted = threading.Event()

    def record(event: Event) -> None:  # a def listener: runs on a thread
        submitted.append(event.poll_id or "")
        if len(submitted) == len(delays):
            all_submitted.set()

    poller.add_listener(record, "poll_submitted")

    @poller.poll_function("watch")
    def watch(n: int) -> Pending:
        return Pending()

    plain_url = sa.make_url(database_url).set(drivername="postgresql")
    conninfo = plain_url.render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{table_prefix}changes"')
        async with poller:
            polls = [
                await poller.start_poll("watch", {"n": n}, delay=delay)
                for n, delay in enumerate(delays)
            ]
            payloads = []
            with anyio.move_on_after(QUIET * 2):
                async for notify in listener.notifies():
                    payloads.append(notify.payload)
            await wait_thread_event(all_submitted)
    assert payloads == ["polls", "polls"]
    assert sorted(submitted) == sorted(poll.id for poll in polls)


@sqlite_only
async def test_a_def_call_that_timed_out_waiting_for_a_thread_never_runs_later(
    make_poller: PollerFactory,
) -> None:
    poller = make_poller(thread_pool_size=1, attempt_timeout=0.2)
    blocking, release = threading.Event(), threading.Event()
    queued_calls: list[int] = []

    @poller.poll_function("blocker")
    def blocker() -> Done:
        blocking.set()
        release.wait(WAIT)
        return Done()

    @poller.poll_function("queued")
    def queued() -> Done:
        queued_calls.append(1)
        return Done()

    try:
        async with poller:
            await poller.start_poll("blocker", max_errors=0)
            await wait_thread_event(blocking)  # the only thread is now taken
            poll = await poller.start_poll("queued", max_errors=0)
            final = await ended(poller, poll.id)
            release.set()
            await anyio.sleep(QUIET)  # the thread is free again: it must skip the call
    finally:
        release.set()
    assert final.state is PollState.FAILED
    assert final.error is not None and "timed out" in final.error
    assert queued_calls == []
